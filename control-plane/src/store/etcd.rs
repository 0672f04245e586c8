//! The etcd store: the contract over etcd's v3 API (etcd 3.4 or later) through `etcd-client`.
//!
//! The contract is etcd's own, so this is mostly translation. Three places need care: `list`
//! pages through large prefixes at one pinned revision (a single response is capped at a few
//! MiB); watch responses already hold whole revisions (etcd never splits a revision across
//! responses unless asked to fragment), and a response carrying `compact_revision` becomes
//! [`WatchEvent::Compacted`]; and errors are classified by gRPC code, so a connection problem is
//! [`StoreError::Unavailable`] and a missing lease is [`StoreError::LeaseNotFound`].

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, CompactionOptions, CompareOp, ConnectOptions, EventType, GetOptions,
    Identity, PutOptions, TlsOptions, TxnOp, WatchOptions,
};
use tonic::Code;

use super::{
    Change, Compare, KeyValue, LeaseId, Op, Revision, Store, StoreError, Txn, TxnOutcome,
    WatchEvent, WatchStream,
};

/// Keys per `list` page.
const PAGE: i64 = 500;

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
        let connect = async {
            let mut client = Client::connect(&config.endpoints, Some(options)).await?;
            client.status().await?;
            Ok::<_, etcd_client::Error>(client)
        };
        let client = match tokio::time::timeout(config.connect_timeout, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => return Err(unreachable("no answer".into())),
        };
        Ok(EtcdStore {
            client,
            endpoints,
            request_timeout: config.request_timeout,
        })
    }

    /// Runs one request with the request timeout. `lease` is the lease the request refers
    /// to, reported when etcd says it does not exist.
    async fn call<T>(
        &self,
        what: &str,
        lease: Option<LeaseId>,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.request_timeout, request).await {
            Ok(Err(etcd_client::Error::GRpcStatus(s))) if s.code() == Code::NotFound => {
                Err(match lease {
                    Some(id) => StoreError::LeaseNotFound(id),
                    None => StoreError::Invalid(format!("etcd: {}", s.message())),
                })
            }
            Ok(result) => result.map_err(classify),
            Err(_) => Err(StoreError::Unavailable(format!(
                "etcd at {} did not answer {what} within {:?}",
                self.endpoints, self.request_timeout
            ))),
        }
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let mut kv = self.client.kv_client();
        let options = GetOptions::new().with_count_only();
        let resp = self.call("get", None, kv.get("/", Some(options))).await?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let mut kv = self.client.kv_client();
        let resp = self.call("get", None, kv.get(key, None)).await?;
        resp.kvs().first().map(key_value).transpose()
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let mut kv = self.client.kv_client();
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
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE)
                .with_revision(revision);
            let resp = self
                .call("list", None, kv.get(start.clone(), Some(options)))
                .await?;
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

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
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
        let mut kv = self.client.kv_client();
        let resp = self.call("txn", lease, kv.txn(request)).await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        Ok(if resp.succeeded() {
            TxnOutcome::Committed(revision)
        } else {
            TxnOutcome::Conflict(revision)
        })
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        if from < 1 {
            return Err(StoreError::Invalid(format!(
                "a watch starts at revision 1 or later, not {from}"
            )));
        }
        let mut client = self.client.watch_client();
        let options = WatchOptions::new().with_prefix().with_start_revision(from);
        let stream = self
            .call("watch", None, client.watch(prefix, Some(options)))
            .await?;
        Ok(Box::pin(futures::stream::unfold(Some(stream), next_event)))
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        if ttl.is_zero() {
            return Err(StoreError::Invalid("lease ttl must be positive".into()));
        }
        // etcd counts in whole seconds; round up so a lease never lives shorter than asked.
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let secs = i64::try_from(secs).unwrap_or(i64::MAX);
        let mut lease = self.client.lease_client();
        let resp = self
            .call("lease grant", None, lease.grant(secs, None))
            .await?;
        Ok(resp.id())
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<(), StoreError> {
        let mut lease = self.client.lease_client();
        // `keep_alive` opens the stream and waits for the first answer, which reports whether
        // the lease still exists; one refresh needs nothing more.
        match tokio::time::timeout(self.request_timeout, lease.keep_alive(id)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(_))) => {
                Err(StoreError::LeaseNotFound(id))
            }
            Ok(Err(e)) => Err(classify(e)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "etcd at {} did not answer lease keep-alive within {:?}",
                self.endpoints, self.request_timeout
            ))),
        }
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<(), StoreError> {
        let mut lease = self.client.lease_client();
        self.call("lease revoke", Some(id), lease.revoke(id))
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
        let mut kv = self.client.kv_client();
        let options = CompactionOptions::new().with_physical();
        match tokio::time::timeout(self.request_timeout, kv.compact(revision, Some(options))).await
        {
            Ok(Ok(_)) => Ok(()),
            // Not a future revision (checked above), so it is already compacted: done.
            Ok(Err(etcd_client::Error::GRpcStatus(s))) if s.code() == Code::OutOfRange => Ok(()),
            Ok(Err(e)) => Err(classify(e)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "etcd at {} did not answer compact within {:?}",
                self.endpoints, self.request_timeout
            ))),
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
