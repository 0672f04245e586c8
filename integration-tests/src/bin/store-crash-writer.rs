//! The crash test's child: writes to an embedded store until it is killed.
//!
//! Usage: `store-crash-writer <store dir> <key prefix>`. Each transaction puts one to four keys
//! `<prefix>/<n>/<j>` (value: the key repeated 32 times) and `/crash/last`; once `txn` returns,
//! it prints `<key> <revision>` for each key in one write, so a kill never leaves half a
//! line and everything printed was committed.

use std::io::Write;

use anyhow::{Context, bail};
use portico_control_plane::store::embedded::EmbeddedStore;
use portico_control_plane::store::{Op, Store, Txn, TxnOutcome};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(prefix)) = (args.next(), args.next()) else {
        bail!("usage: store-crash-writer <store dir> <key prefix>");
    };
    let store = EmbeddedStore::open(&dir).with_context(|| format!("opening {dir}"))?;
    let mut stdout = std::io::stdout();
    for n in 0u64.. {
        let keys: Vec<String> = (0..=n % 4).map(|j| format!("{prefix}/{n}/{j}")).collect();
        let mut ops: Vec<Op> = keys
            .iter()
            .map(|key| Op::Put {
                key: key.clone(),
                value: key.as_bytes().repeat(32),
                lease: None,
            })
            .collect();
        ops.push(Op::Put {
            key: "/crash/last".into(),
            value: format!("{prefix}/{n}").into_bytes(),
            lease: None,
        });
        let txn = Txn {
            compares: vec![],
            ops,
        };
        let TxnOutcome::Committed(revision) = store.txn(txn).await? else {
            bail!("a transaction without compares conflicted");
        };
        let lines: String = keys.iter().map(|k| format!("{k} {revision}\n")).collect();
        stdout.write_all(lines.as_bytes())?;
        stdout.flush()?;
    }
    Ok(())
}
