//! `portico token create|list|revoke`: API tokens with a role (viewer, operator, admin) and
//! join tokens for agents. A token is printed once, when it is created; the control plane
//! keeps only its SHA-256.

use std::collections::BTreeMap;
use std::time::Duration;

use portico_api::pb::{CreateTokenRequest, ListTokensRequest, RevokeTokenRequest, Role, Token};
use serde::Serialize;

use crate::commands::Context;
use crate::error::{CliError, CliResult};
use crate::output::{self, Table};

/// `portico token …`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create an API token with a role, or a join token for agents; print it once.
    Create(CreateArgs),
    /// List the tokens (never the tokens themselves).
    List,
    /// Revoke a token: calls and joins with it are refused from then on.
    Revoke(RevokeArgs),
}

/// A role an API token has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RoleArg {
    /// get, list, history, agents, rollout status, health, usage, status.
    Viewer,
    /// The viewer's, and apply, delete, rollback, consumers.
    Operator,
    /// Everything: and tokens, Secrets, the CA, agent revocation.
    Admin,
}

/// `portico token create (--role ROLE --name NAME | --join [--region R] [--label K=V]…
/// [--uses N]) [--ttl DUR]`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The API token's role.
    #[arg(
        long,
        value_enum,
        required_unless_present = "join",
        conflicts_with = "join"
    )]
    pub role: Option<RoleArg>,
    /// The token's name, recorded as the author of the changes made with it (default for a
    /// join token: join-<6 hex digits>).
    #[arg(long, required_unless_present = "join")]
    pub name: Option<String>,
    /// A join token: agents exchange it for their certificate (portico-agent --join-token).
    #[arg(long)]
    pub join: bool,
    /// The region its agents must claim.
    #[arg(long, requires = "join")]
    pub region: Option<String>,
    /// A label `K=V` its agents may claim; repeatable. With any, agents may claim only these.
    #[arg(long = "label", value_name = "K=V", requires = "join")]
    pub labels: Vec<String>,
    /// How many agents may join with it (default: no limit).
    #[arg(long, requires = "join")]
    pub uses: Option<u32>,
    /// How long it works, e.g. 1h or 30d (default: until revoked).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
}

/// `portico token revoke NAME`.
#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// The token's name.
    pub name: String,
}

/// A token as `list` shows it. JSON fields are stable.
#[derive(Debug, Serialize)]
pub struct TokenInfo {
    /// Its name.
    pub name: String,
    /// `viewer`, `operator`, `admin` or `join`.
    pub role: &'static str,
    /// When it was created, RFC 3339 UTC.
    pub created: String,
    /// When it stops working, RFC 3339 UTC ("" when never).
    pub expires: String,
    /// Join tokens: the region its agents must claim ("" for any).
    pub region: String,
    /// Join tokens: the only labels its agents may claim (empty for any).
    pub labels: BTreeMap<String, String>,
    /// Join tokens: how many agents joined with it.
    pub uses: u32,
    /// Join tokens: how many may (0: no limit).
    pub max_uses: u32,
}

impl TokenInfo {
    fn from_pb(t: &Token) -> TokenInfo {
        TokenInfo {
            name: t.name.clone(),
            role: t.role().name(),
            created: output::rfc3339(t.created.as_ref()),
            expires: output::rfc3339(t.expires.as_ref()),
            region: t.region.clone(),
            labels: t.labels.clone().into_iter().collect(),
            uses: t.uses,
            max_uses: t.max_uses,
        }
    }
}

/// What `create` prints: the token, once. JSON fields are stable.
#[derive(Debug, Serialize)]
pub struct Created {
    /// The token. Shown only here.
    pub token: String,
    /// What was stored.
    #[serde(flatten)]
    pub info: TokenInfo,
}

/// What `list` prints.
#[derive(Debug, Serialize)]
pub struct Tokens {
    /// By name.
    pub tokens: Vec<TokenInfo>,
}

/// Runs `token …`.
pub async fn run(ctx: &Context, command: Command) -> CliResult {
    match command {
        Command::Create(args) => create(ctx, args).await,
        Command::List => list(ctx).await,
        Command::Revoke(args) => revoke(ctx, args).await,
    }
}

async fn create(ctx: &Context, args: CreateArgs) -> CliResult {
    let role = match (args.join, args.role) {
        (true, _) => Role::Join,
        (false, Some(RoleArg::Viewer)) => Role::Viewer,
        (false, Some(RoleArg::Operator)) => Role::Operator,
        (false, Some(RoleArg::Admin)) => Role::Admin,
        (false, None) => return Err(CliError::Usage("--role or --join is required".into())),
    };
    let name = match args.name {
        Some(n) => n,
        None => format!("join-{:06x}", rand::random::<u32>() & 0xff_ffff),
    };
    let labels = parse_labels(&args.labels)?;
    let mut admin = ctx.connect().await?;
    let resp = admin
        .create_token(CreateTokenRequest {
            name,
            role: role as i32,
            ttl_seconds: args.ttl.map_or(0, |d| d.as_secs().max(1)),
            region: args.region.unwrap_or_default(),
            labels,
            max_uses: args.uses.unwrap_or(0),
        })
        .await
        .map_err(|s| ctx.status(s))?
        .into_inner();
    let info = resp.info.unwrap_or_default();
    let out = Created {
        token: resp.token,
        info: TokenInfo::from_pb(&info),
    };
    output::print(ctx.format, &out, || created_text(&out))
}

fn created_text(out: &Created) -> String {
    let info = &out.info;
    let mut about = Vec::new();
    if info.role == "join" {
        if !info.region.is_empty() {
            about.push(format!("region {}", info.region));
        }
        if !info.labels.is_empty() {
            let labels: Vec<String> = info
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            about.push(format!("labels {}", labels.join(",")));
        }
        if info.max_uses > 0 {
            about.push(format!("{} use(s)", info.max_uses));
        }
    } else {
        about.push(format!("role {}", info.role));
    }
    if !info.expires.is_empty() {
        about.push(format!("expires {}", info.expires));
    }
    let kind = if info.role == "join" {
        "join token"
    } else {
        "token"
    };
    let about = if about.is_empty() {
        String::new()
    } else {
        format!(" ({})", about.join(", "))
    };
    let hint = if info.role == "join" {
        "Agents join with: portico-agent --join-token TOKEN --ca-fingerprint FINGERPRINT \
         (portico ca show)\n"
    } else {
        ""
    };
    format!(
        "{kind} {}{about} created\n{}\nThis token is shown once: only its SHA-256 is kept.\n{hint}",
        info.name, out.token
    )
}

async fn list(ctx: &Context) -> CliResult {
    let mut admin = ctx.connect().await?;
    let resp = admin
        .list_tokens(ListTokensRequest {})
        .await
        .map_err(|s| ctx.status(s))?
        .into_inner();
    let out = Tokens {
        tokens: resp.tokens.iter().map(TokenInfo::from_pb).collect(),
    };
    output::print(ctx.format, &out, || table(&out.tokens))
}

fn table(tokens: &[TokenInfo]) -> String {
    if tokens.is_empty() {
        return "no tokens\n".to_string();
    }
    let mut t = Table::new(["NAME", "ROLE", "CREATED", "EXPIRES", "USES", "BOUNDS"]);
    for token in tokens {
        let uses = match (token.role, token.max_uses) {
            ("join", 0) => token.uses.to_string(),
            ("join", max) => format!("{}/{max}", token.uses),
            _ => String::new(),
        };
        let mut bounds: Vec<String> = Vec::new();
        if !token.region.is_empty() {
            bounds.push(format!("region={}", token.region));
        }
        bounds.extend(token.labels.iter().map(|(k, v)| format!("{k}={v}")));
        t.row([
            token.name.clone(),
            token.role.to_string(),
            token.created.clone(),
            if token.expires.is_empty() {
                "never".to_string()
            } else {
                token.expires.clone()
            },
            uses,
            bounds.join(","),
        ]);
    }
    t.render()
}

async fn revoke(ctx: &Context, args: RevokeArgs) -> CliResult {
    let mut admin = ctx.connect().await?;
    admin
        .revoke_token(RevokeTokenRequest {
            name: args.name.clone(),
        })
        .await
        .map_err(|s| ctx.status(s))?;
    println!("token {} revoked", args.name);
    Ok(())
}

/// `K=V` labels of `--label`.
fn parse_labels(items: &[String]) -> CliResult<BTreeMap<String, String>> {
    items
        .iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(CliError::Usage(format!(
                "bad --label {s:?}; expected key=value"
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(role: &'static str) -> TokenInfo {
        TokenInfo {
            name: "edge-eu".into(),
            role,
            created: "2026-12-01T10:00:00Z".into(),
            expires: String::new(),
            region: String::new(),
            labels: BTreeMap::new(),
            uses: 0,
            max_uses: 0,
        }
    }

    #[test]
    fn a_created_token_is_printed_once_with_what_bounds_it() {
        let mut join = info("join");
        join.region = "eu".into();
        join.max_uses = 3;
        let text = created_text(&Created {
            token: "pt_abc".into(),
            info: join,
        });
        assert!(
            text.starts_with("join token edge-eu (region eu, 3 use(s)) created\npt_abc\n"),
            "{text}"
        );
        assert!(text.contains("--join-token"), "{text}");
        let text = created_text(&Created {
            token: "pt_abc".into(),
            info: info("viewer"),
        });
        assert!(
            text.starts_with("token edge-eu (role viewer) created\n"),
            "{text}"
        );
    }

    #[test]
    fn the_json_of_a_created_token_has_the_token_field() {
        let json = serde_json::to_value(Created {
            token: "pt_abc".into(),
            info: info("admin"),
        })
        .unwrap_or_default();
        assert_eq!(json["token"], "pt_abc");
        assert_eq!(json["role"], "admin");
        assert_eq!(json["name"], "edge-eu");
    }

    #[test]
    fn the_list_shows_uses_and_bounds_of_join_tokens() {
        let mut join = info("join");
        join.uses = 1;
        join.max_uses = 5;
        join.labels.insert("tier".into(), "edge".into());
        let text = table(&[info("operator"), join]);
        assert!(text.contains("1/5"), "{text}");
        assert!(text.contains("tier=edge"), "{text}");
        assert!(text.contains("never"), "{text}");
    }
}
