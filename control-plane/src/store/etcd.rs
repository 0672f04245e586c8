//! The etcd store: the contract over etcd's v3 API (etcd 3.4 or later) through `etcd-client`.
//!
//! The contract is etcd's own, so this is mostly translation. Three places need care: `list`
//! pages through large prefixes at one pinned revision (a single response is capped at a few
//! MiB); watch responses already hold whole revisions (etcd never splits a revision across
//! responses unless asked to fragment), and a response carrying `compact_revision` becomes
//! [`WatchEvent::Compacted`]; and errors are classified by gRPC code, so a connection problem is
//! [`StoreError::Unavailable`] and a missing lease is [`StoreError::LeaseNotFound`].

use std::future::Future;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, CompactionOptions, CompareOp, ConnectOptions, EventType, GetOptions,
    Identity, PutOptions, TlsOptions, TxnOp, WatchOptions,
};
use tonic::Code;

use super::{
    Change, Compare, KeyRange, KeyValue, LeaseId, Op, Revision, Store, StoreError, Txn, TxnOutcome,
    WatchEvent, WatchStream, check_txn_size,
};

/// How often a request that never reached etcd is sent again (to another endpoint, if the
/// balancer has one) before its error is returned.
const MAX_RETRIES: u32 = 10;
/// Keys per `list` page.
const PAGE: i64 = 500;
/// The largest response accepted. etcd sends a watch's replay of up to 1,000 revisions, or a
/// page of large values, in one message, far beyond gRPC's default 4 MiB; refusing it would
/// fail the same request on every retry.
const MAX_MESSAGE: usize = 256 << 20;

/// How to reach etcd.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// Client URLs of the cluster members, e.g. `https://etcd-0:2379`.
    pub endpoints: Vec<String>,
    /// TLS settings; required for `https://` endpoints.
    pub tls: Option<EtcdTls>,
    /// How long [`EtcdStore::connect`] waits for a first answer.
    pub connect_timeout: Duration,
    /// How long any single request may take before it fails as unavailable.
    pub request_timeout: Duration,
}

impl EtcdConfig {
    /// Plain-text endpoints with default timeouts (5 s to connect, 10 s per request).
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> EtcdConfig {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            tls: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// TLS to etcd: PEM files.
#[derive(Clone, Debug, Default)]
pub struct EtcdTls {
    /// The CA that signed etcd's server certificates; the system roots are not used.
    pub ca: Option<PathBuf>,
    /// A client certificate, for etcd's `--client-cert-auth`; needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key.
    pub client_key: Option<PathBuf>,
    /// The name to expect in etcd's certificate when it differs from the endpoint's host.
    pub server_name: Option<String>,
}

impl EtcdTls {
    fn options(&self) -> Result<TlsOptions, StoreError> {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &self.ca {
            tls = tls.ca_certificate(Certificate::from_pem(read_pem(ca)?));
        }
        match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(read_pem(cert)?, read_pem(key)?));
            }
            (None, None) => {}
            _ => {
                return Err(StoreError::Invalid(
                    "etcd client certificate and key must be given together".into(),
                ));
            }
        }
        if let Some(name) = &self.server_name {
            tls = tls.domain_name(name.clone());
        }
        Ok(tls)
    }
}

fn read_pem(path: &Path) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|e| StoreError::Invalid(format!("reading {}: {e}", path.display())))
}

/// The etcd store (see the module doc). Cheap to clone: clones share the connections.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    endpoints: String,
    request_timeout: Duration,
}

impl EtcdStore {
    /// Connects and checks that etcd answers within `connect_timeout`, so a wrong address or a
    /// dead cluster fails at startup with a clear error rather than at the first request.
    pub async fn connect(config: &EtcdConfig) -> Result<EtcdStore, StoreError> {
        if config.endpoints.is_empty() {
            return Err(StoreError::Invalid("no etcd endpoints given".into()));
        }
        let endpoints = config.endpoints.join(",");
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if let Some(tls) = &config.tls {
            options = options.with_tls(tls.options()?);
        }
        let unreachable = |detail: String| {
            StoreError::Unavailable(format!(
                "cannot reach etcd at {endpoints} within {:?}: {detail}",
                config.connect_timeout
            ))
        };
        let client = match tokio::time::timeout(
            config.connect_timeout,
            Client::connect(&config.endpoints, Some(options)),
        )
        .await
        {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => return Err(unreachable("no answer".into())),
        };
        let store = EtcdStore {
            client,
            endpoints: endpoints.clone(),
            request_timeout: config.request_timeout,
        };
        let probe = || {
            let mut maintenance = store.client.maintenance_client();
            async move { maintenance.status().await }
        };
        match store.send("status", config.connect_timeout, probe).await {
            Ok(Ok(_)) => Ok(store),
            Ok(Err(e)) => Err(unreachable(e.to_string())),
            Err(_) => Err(unreachable("no answer".into())),
        }
    }

    /// Sends a request, retrying it while it fails before reaching etcd (an endpoint refuses
    /// connections: the balancer tried a dead member), for at most `timeout` in all.
    async fn send<T, F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        mut request: F,
    ) -> Result<Result<T, etcd_client::Error>, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut retries = 0;
        loop {
            match tokio::time::timeout_at(deadline, request()).await {
                Ok(Err(e)) if retries < MAX_RETRIES && never_sent(&e) => {
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(10 * u64::from(retries))).await;
                }
                Ok(result) => return Ok(result),
                Err(_) => {
                    return Err(StoreError::Unavailable(format!(
                        "etcd at {} did not answer {what} within {timeout:?}",
                        self.endpoints
                    )));
                }
            }
        }
    }

    /// [`EtcdStore::send`] with the request timeout and errors classified. `lease` is the
    /// lease the request refers to, reported when etcd says it does not exist.
    async fn call<T, F, Fut>(
        &self,
        what: &str,
        lease: Option<LeaseId>,
        request: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        match self.send(what, self.request_timeout, request).await? {
            Ok(value) => Ok(value),
            Err(etcd_client::Error::GRpcStatus(s)) if s.code() == Code::NotFound => {
                Err(match lease {
                    Some(id) => StoreError::LeaseNotFound(id),
                    None => StoreError::Invalid(format!("etcd: {}", s.message())),
                })
            }
            Err(e) => Err(classify(e)),
        }
    }

    fn kv(&self) -> etcd_client::KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE)
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let resp = self
            .call("get", None, || {
                let mut kv = self.kv();
                async move { kv.get("/", Some(GetOptions::new().with_count_only())).await }
            })
            .await?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// Every key starting with `prefix` at one revision, paged; without values when
    /// `keys_only`.
    async fn range(
        &self,
        prefix: &str,
        keys_only: bool,
    ) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let end = prefix_end(prefix.as_bytes());
        let mut start = if prefix.is_empty() {
            vec![0]
        } else {
            prefix.as_bytes().to_vec()
        };
        let mut revision = 0;
        let mut out = Vec::new();
        loop {
            // Later pages read at the first page's revision, so the list is one consistent
            // snapshot.
            let page = || {
                let mut kv = self.kv();
                let mut options = GetOptions::new()
                    .with_range(end.clone())
                    .with_limit(PAGE)
                    .with_revision(revision);
                if keys_only {
                    options = options.with_keys_only();
                }
                let start = start.clone();
                async move { kv.get(start, Some(options)).await }
            };
            let resp = self.call("list", None, page).await?;
            if revision == 0 {
                revision = resp.header().map_or(0, |h| h.revision());
            }
            for item in resp.kvs() {
                out.push(key_value(item)?);
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => return Ok((out, revision)),
            }
        }
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let resp = self
            .call("get", None, || {
                let mut kv = self.kv();
                async move { kv.get(key, None).await }
            })
            .await?;
        resp.kvs().first().map(key_value).transpose()
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        self.range(prefix, false).await
    }

    async fn list_keys(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        self.range(prefix, true).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        // etcd refuses the larger ones itself, with a message that names no limit.
        check_txn_size(&txn)?;
        let lease = txn.ops.iter().find_map(|op| match op {
            Op::Put { lease, .. } => *lease,
            Op::Delete { .. } => None,
        });
        let compares: Vec<etcd_client::Compare> = txn
            .compares
            .into_iter()
            .map(|c| match c {
                Compare::ModRevision { key, revision } => {
                    etcd_client::Compare::mod_revision(key, CompareOp::Equal, revision)
                }
                Compare::Exists { key } => {
                    etcd_client::Compare::create_revision(key, CompareOp::Greater, 0)
                }
            })
            .collect();
        let ops: Vec<TxnOp> = txn
            .ops
            .into_iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => {
                    let options = lease.map(|id| PutOptions::new().with_lease(id));
                    TxnOp::put(key, value, options)
                }
                Op::Delete { key } => TxnOp::delete(key, None),
            })
            .collect();
        let request = etcd_client::Txn::new().when(compares).and_then(ops);
        let resp = self
            .call("txn", lease, || {
                let mut kv = self.kv();
                let request = request.clone();
                async move { kv.txn(request).await }
            })
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        Ok(if resp.succeeded() {
            TxnOutcome::Committed(revision)
        } else {
            TxnOutcome::Conflict(revision)
        })
    }

    async fn watch_range(
        &self,
        range: KeyRange,
        from: Revision,
    ) -> Result<WatchStream, StoreError> {
        if from < 1 {
            return Err(StoreError::Invalid(format!(
                "a watch starts at revision 1 or later, not {from}"
            )));
        }
        let start = || {
            let mut client = self
                .client
                .watch_client()
                .max_decoding_message_size(MAX_MESSAGE);
            let end = match &range {
                KeyRange::Prefix(prefix) => prefix_end(prefix.as_bytes()),
                KeyRange::Span { end, .. } => end.as_bytes().to_vec(),
            };
            let options = WatchOptions::new()
                .with_range(end)
                .with_start_revision(from);
            // etcd reads an empty key as "no key"; "\0" is the first key there is.
            let key = match range.start() {
                "" => vec![0],
                start => start.as_bytes().to_vec(),
            };
            async move { client.watch(key, Some(options)).await }
        };
        let stream = self.call("watch", None, start).await?;
        Ok(Box::pin(futures::stream::unfold(Some(stream), next_event)))
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        if ttl.is_zero() {
            return Err(StoreError::Invalid("lease ttl must be positive".into()));
        }
        // etcd counts in whole seconds; round up so a lease never lives shorter than asked.
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let secs = i64::try_from(secs).unwrap_or(i64::MAX);
        let grant = || {
            let mut lease = self.client.lease_client();
            async move { lease.grant(secs, None).await }
        };
        let resp = self.call("lease grant", None, grant).await?;
        Ok(resp.id())
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<(), StoreError> {
        // `keep_alive` opens the stream and waits for the first answer, which reports whether
        // the lease still exists; one refresh needs nothing more.
        let refresh = || {
            let mut lease = self.client.lease_client();
            async move { lease.keep_alive(id).await }
        };
        match self
            .send("lease keep-alive", self.request_timeout, refresh)
            .await?
        {
            Ok(_) => Ok(()),
            Err(etcd_client::Error::LeaseKeepAliveError(_)) => Err(StoreError::LeaseNotFound(id)),
            Err(e) => Err(classify(e)),
        }
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<(), StoreError> {
        self.call("lease revoke", Some(id), || {
            let mut lease = self.client.lease_client();
            async move { lease.revoke(id).await }
        })
        .await?;
        Ok(())
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let current = self.current_revision().await?;
        if revision > current {
            return Err(StoreError::Invalid(format!(
                "cannot compact to revision {revision}: the current revision is {current}"
            )));
        }
        let compact = || {
            let mut kv = self.kv();
            async move {
                let options = CompactionOptions::new().with_physical();
                kv.compact(revision, Some(options)).await
            }
        };
        match self.send("compact", self.request_timeout, compact).await? {
            Ok(_) => Ok(()),
            // Not a future revision (checked above), so it is already compacted: done.
            Err(etcd_client::Error::GRpcStatus(s)) if s.code() == Code::OutOfRange => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }
}

/// One step of the watch stream: the next non-empty event, or the end.
async fn next_event(
    stream: Option<etcd_client::WatchStream>,
) -> Option<(
    Result<WatchEvent, StoreError>,
    Option<etcd_client::WatchStream>,
)> {
    let mut stream = stream?;
    loop {
        let resp = match stream.message().await {
            Ok(Some(resp)) => resp,
            Ok(None) => {
                let closed = StoreError::Unavailable("etcd closed the watch".into());
                return Some((Err(closed), None));
            }
            Err(e) => return Some((Err(classify(e)), None)),
        };
        if resp.compact_revision() > 0 {
            let compacted = WatchEvent::Compacted {
                compact_revision: resp.compact_revision(),
            };
            return Some((Ok(compacted), None));
        }
        if resp.canceled() {
            let reason = format!("etcd canceled the watch: {}", resp.cancel_reason());
            return Some((Err(StoreError::Unavailable(reason)), None));
        }
        if resp.events().is_empty() {
            continue;
        }
        let changes: Result<Vec<Change>, StoreError> = resp
            .events()
            .iter()
            .map(|event| {
                let kv = event
                    .kv()
                    .ok_or_else(|| StoreError::Corrupt("watch event without a key".into()))?;
                Ok(match event.event_type() {
                    EventType::Put => Change::Put(key_value(kv)?),
                    EventType::Delete => Change::Delete {
                        key: key_string(kv)?,
                        revision: kv.mod_revision(),
                    },
                })
            })
            .collect();
        return Some(match changes {
            Ok(changes) => (Ok(WatchEvent::Changes(changes)), Some(stream)),
            Err(e) => (Err(e), None),
        });
    }
}

fn key_string(kv: &etcd_client::KeyValue) -> Result<String, StoreError> {
    kv.key_str()
        .map(str::to_string)
        .map_err(|_| StoreError::Corrupt(format!("etcd key {:?} is not UTF-8", kv.key())))
}

fn key_value(kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    Ok(KeyValue {
        key: key_string(kv)?,
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: Some(kv.lease()).filter(|id| *id != 0),
    })
}

/// The first key after every key starting with `prefix` (etcd's range end for a prefix);
/// `[0]`, meaning "no end", when there is none.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Whether a request failed before it reached etcd, so sending it again cannot apply it
/// twice: the connection to the chosen endpoint was refused or had no route.
fn never_sent(e: &etcd_client::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = match e {
        etcd_client::Error::GRpcStatus(status) => Some(status),
        etcd_client::Error::TransportError(e) => Some(e),
        etcd_client::Error::IoError(e) => Some(e),
        _ => None,
    };
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
                    | ErrorKind::AddrNotAvailable
            );
        }
        source = e.source();
    }
    false
}

/// Classifies an etcd error by its gRPC code: only the ones that say "try again" are
/// retryable.
fn classify(e: etcd_client::Error) -> StoreError {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            let message = format!("etcd: {}", status.message());
            match status.code() {
                Code::NotFound
                | Code::InvalidArgument
                | Code::FailedPrecondition
                | Code::OutOfRange
                | Code::AlreadyExists
                | Code::PermissionDenied
                | Code::Unauthenticated
                | Code::Unimplemented => StoreError::Invalid(message),
                _ => StoreError::Unavailable(message),
            }
        }
        etcd_client::Error::InvalidArgs(_) | etcd_client::Error::InvalidUri(_) => {
            StoreError::Invalid(format!("etcd: {e}"))
        }
        e => StoreError::Unavailable(format!("etcd: {e}")),
    }
}
