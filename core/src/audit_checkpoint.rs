//! Signed checkpoints of the audit chain's head, kept where the database cannot rewrite them.
//!
//! The hash chain shows an edit anywhere in the log, but not the removal of its newest rows:
//! what is left is still a valid chain. So the head (the last row's sequence number and hash,
//! and the row count) is signed with the audit key and written to the object store under
//! `audit/checkpoints/{seq:020}-{at}.json`, with `PutMode::Create`: a name is written once and
//! never replaced (conditional put on S3, an exclusive link on a local folder). `pathfed serve`
//! writes one when it starts, every `audit.checkpoint_minutes` and when it stops; `pathfed audit
//! checkpoint` writes one on demand. None is written when the head has not moved since the
//! last one. When `audit.syslog_address` is set, each checkpoint also goes out as one RFC 5424
//! line over UDP, a copy outside this host's storage altogether.
//!
//! [`crate::audit::verify`] then checks each checkpoint's signature and that the row it names
//! is still there with the hash it recorded: removing the newest rows, or recomputing the chain
//! (even with the key) after a checkpoint, no longer goes unnoticed. The store's create-only
//! writes keep this process from replacing a checkpoint; an operator who can delete objects in
//! the store could still delete one, which is why a bucket with object lock (WORM) or the
//! syslog copy is advised for production.

use std::time::Duration;

use futures::StreamExt;
use object_store::PutMode;
use object_store::path::Path as ObjectPath;
use serde::{Deserialize, Serialize};

use crate::audit;
use crate::db::now;
use crate::error::{CoreError, CoreResult};
use crate::keys::SecretKey;
use crate::platform::Platform;
use crate::store::{Store, get_bytes, list_keys};

/// Where checkpoints are kept in the object store.
pub const PREFIX: &str = "audit/checkpoints";

/// A signed statement of the chain's head at a moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The last row's sequence number.
    pub seq: i64,
    /// The last row's hash.
    pub hash: String,
    /// When it was taken (unix seconds).
    pub at: i64,
    /// How many rows the log held.
    pub rows: i64,
    /// HMAC-SHA256 (hex) under the audit key of `checkpoint`, seq, hash, at and rows.
    pub mac: String,
}

fn mac(key: &SecretKey, seq: i64, hash: &str, at: i64, rows: i64) -> String {
    key.keyed_hash(&[
        "checkpoint",
        &seq.to_string(),
        hash,
        &at.to_string(),
        &rows.to_string(),
    ])
}

impl Checkpoint {
    /// A checkpoint of the head (`seq`, `hash`) signed with `key`.
    pub fn sign(key: &SecretKey, seq: i64, hash: String, at: i64, rows: i64) -> Self {
        let mac = mac(key, seq, &hash, at, rows);
        Self {
            seq,
            hash,
            at,
            rows,
            mac,
        }
    }

    /// Whether `key` signed exactly these values.
    pub fn is_signed_by(&self, key: &SecretKey) -> bool {
        let expected = mac(key, self.seq, &self.hash, self.at, self.rows);
        crate::http::constant_time_eq(expected.as_bytes(), self.mac.as_bytes())
    }
}

/// A checkpoint just written, with its object key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Where it was written.
    pub key: String,
    /// What was written.
    pub checkpoint: Checkpoint,
}

/// The object key of the checkpoint of row `seq` taken at `at`; keys sort by row.
pub fn object_key(seq: i64, at: i64) -> String {
    format!("{PREFIX}/{seq:020}-{at}.json")
}

/// The row a checkpoint's object key names.
pub fn seq_of_key(key: &str) -> Option<i64> {
    key.strip_prefix(PREFIX)?
        .strip_prefix('/')?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// Whether a checkpoint lies under the key its own values give (a checkpoint copied to
/// another name is as suspect as an altered one).
pub fn key_matches(key: &str, checkpoint: &Checkpoint) -> bool {
    key == object_key(checkpoint.seq, checkpoint.at)
}

/// Unix seconds as ISO 8601 UTC (`2026-04-01T09:30:00Z`).
pub fn iso_time(at: i64) -> String {
    jiff::Timestamp::from_second(at)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| at.to_string())
}

/// Writes `bytes` under `key` unless something is already there: [`CoreError::Conflict`]
/// then, and the object is left as it was.
pub async fn put_once(store: &Store, key: &str, bytes: Vec<u8>) -> CoreResult<()> {
    let location = ObjectPath::from(key);
    let objects: &dyn object_store::ObjectStore = &**store;
    match objects
        .put_opts(&location, bytes.into(), PutMode::Create.into())
        .await
    {
        Ok(_) => Ok(()),
        Err(object_store::Error::AlreadyExists { .. }) => Err(CoreError::Conflict(key.into())),
        Err(e) => Err(e.into()),
    }
}

/// Every object under [`PREFIX`], in key order (so by row), each read as a checkpoint or with
/// why it cannot be.
pub async fn list(store: &Store) -> CoreResult<Vec<(String, Result<Checkpoint, String>)>> {
    let mut keys = list_keys(store, PREFIX).await?;
    keys.sort();
    let read: Vec<(String, CoreResult<Vec<u8>>)> = futures::stream::iter(keys)
        .map(|key| async move {
            let bytes = get_bytes(store, &key).await;
            (key, bytes)
        })
        .buffered(16)
        .collect()
        .await;
    read.into_iter()
        .map(
            |(key, bytes)| -> CoreResult<(String, Result<Checkpoint, String>)> {
                let parsed =
                    serde_json::from_slice::<Checkpoint>(&bytes?).map_err(|e| e.to_string());
                Ok((key, parsed))
            },
        )
        .collect()
}

/// The newest checkpoint signed with `key`, if any.
async fn latest(store: &Store, key: &SecretKey) -> CoreResult<Option<Checkpoint>> {
    let mut keys = list_keys(store, PREFIX).await?;
    keys.sort();
    for object in keys.iter().rev() {
        let Ok(checkpoint) = serde_json::from_slice::<Checkpoint>(&get_bytes(store, object).await?)
        else {
            continue;
        };
        if checkpoint.is_signed_by(key) && key_matches(object, &checkpoint) {
            return Ok(Some(checkpoint));
        }
    }
    Ok(None)
}

/// Writes a checkpoint of the current head; `None` when the log is empty or its head has not
/// moved since the last checkpoint.
pub async fn write(platform: &Platform) -> CoreResult<Option<Written>> {
    let log = &platform.audit;
    let Some(head) = audit::head(&platform.db).await? else {
        return Ok(None);
    };
    match log.checkpointed() {
        Some(done) if done == head => return Ok(None),
        Some(_) => {}
        // This process has written none yet: the last one may be another process's.
        None => {
            if let Some(last) = latest(&platform.store, log.key()).await?
                && last.seq == head.0
                && last.hash == head.1
            {
                log.set_checkpointed(head);
                return Ok(None);
            }
        }
    }
    let rows = audit::count(&platform.db).await?;
    let at = now();
    let checkpoint = Checkpoint::sign(log.key(), head.0, head.1.clone(), at, rows);
    let key = object_key(checkpoint.seq, at);
    let body = serde_json::to_vec_pretty(&checkpoint)
        .map_err(|e| CoreError::io("encoding an audit checkpoint", std::io::Error::other(e)))?;
    match put_once(&platform.store, &key, body).await {
        Ok(()) => {}
        // Another process checkpointed the same head in the same second: that one stands, if
        // it is one (not an object planted under the name this checkpoint was to have).
        Err(CoreError::Conflict(_)) => {
            let there = get_bytes(&platform.store, &key).await?;
            let same = serde_json::from_slice::<Checkpoint>(&there).is_ok_and(|c| {
                c.is_signed_by(log.key()) && c.seq == checkpoint.seq && c.hash == checkpoint.hash
            });
            if !same {
                return Err(CoreError::Integrity(format!(
                    "audit checkpoint {key}: another object already holds its name"
                )));
            }
        }
        Err(e) => return Err(e),
    }
    log.set_checkpointed(head);
    tracing::info!(seq = checkpoint.seq, key = %key, "audit checkpoint written");
    let syslog = platform.config.audit.syslog_address.trim();
    if !syslog.is_empty()
        && let Err(e) = send_syslog(syslog, &key, &checkpoint).await
    {
        tracing::error!(address = syslog, error = %e, "could not send the audit checkpoint to syslog");
    }
    Ok(Some(Written { key, checkpoint }))
}

/// [`write`], with a failure logged rather than returned (for the server's own checkpoints,
/// which must not stop it from serving).
pub async fn write_logged(platform: &Platform, occasion: &str) {
    if let Err(e) = write(platform).await {
        tracing::error!(occasion, error = %e, "could not write an audit checkpoint");
    }
}

/// Writes a checkpoint every `audit.checkpoint_minutes` (none when 0) until the task is
/// aborted or the runtime ends.
pub fn spawn_periodic(platform: Platform) -> Option<tokio::task::JoinHandle<()>> {
    let minutes = platform.config.audit.checkpoint_minutes;
    if minutes == 0 {
        return None;
    }
    Some(tokio::spawn(async move {
        let period = Duration::from_secs(minutes.saturating_mul(60));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            write_logged(&platform, "periodic").await;
        }
    }))
}

/// The checkpoint as one RFC 5424 syslog line: facility 13 (log audit), severity 5 (notice),
/// the checkpoint as JSON in the message.
pub fn syslog_line(key: &str, checkpoint: &Checkpoint) -> String {
    const PRIORITY: u8 = 13 * 8 + 5;
    let message = serde_json::json!({
        "object": key,
        "seq": checkpoint.seq,
        "hash": checkpoint.hash,
        "at": checkpoint.at,
        "rows": checkpoint.rows,
        "mac": checkpoint.mac,
    });
    format!(
        "<{PRIORITY}>1 {} {} pathfed {} audit-checkpoint - {message}",
        iso_time(checkpoint.at),
        hostname(),
        std::process::id()
    )
}

/// This host's name as RFC 5424 allows it (printable ASCII, at most 255), else `-`.
fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = name.trim();
    if name.is_empty() || name.len() > 255 || !name.bytes().all(|b| (33..=126).contains(&b)) {
        "-".into()
    } else {
        name.into()
    }
}

async fn send_syslog(address: &str, key: &str, checkpoint: &Checkpoint) -> std::io::Result<()> {
    let target = tokio::net::lookup_host(address)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{address} names no address")))?;
    let local = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = tokio::net::UdpSocket::bind(local).await?;
    socket
        .send_to(syslog_line(key, checkpoint).as_bytes(), target)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_row_and_name_it() {
        let a = object_key(9, 1_700_000_000);
        let b = object_key(10, 1_600_000_000);
        assert!(a < b);
        assert_eq!(seq_of_key(&b), Some(10));
        assert_eq!(seq_of_key("elsewhere/1-2.json"), None);
    }

    #[test]
    fn a_signature_covers_every_value() {
        let key = SecretKey::from_bytes([3; 32]);
        let good = Checkpoint::sign(&key, 5, "ab".into(), 100, 5);
        assert!(good.is_signed_by(&key));
        assert!(!good.is_signed_by(&SecretKey::from_bytes([4; 32])));
        for forged in [
            Checkpoint {
                seq: 6,
                ..good.clone()
            },
            Checkpoint {
                hash: "cd".into(),
                ..good.clone()
            },
            Checkpoint {
                at: 101,
                ..good.clone()
            },
            Checkpoint {
                rows: 4,
                ..good.clone()
            },
        ] {
            assert!(!forged.is_signed_by(&key), "{forged:?}");
        }
        let line = syslog_line(&object_key(5, 100), &good);
        assert!(line.starts_with("<109>1 1970-01-01T00:01:40Z "), "{line}");
        assert!(line.contains("\"seq\":5"), "{line}");
    }

    #[tokio::test]
    async fn a_name_is_written_once() {
        let store =
            crate::store::open_store("memory://", &crate::config::S3Config::default()).unwrap();
        put_once(&store, "audit/checkpoints/x.json", b"first".to_vec())
            .await
            .unwrap();
        let again = put_once(&store, "audit/checkpoints/x.json", b"second".to_vec()).await;
        assert!(matches!(again, Err(CoreError::Conflict(_))), "{again:?}");
        assert_eq!(
            get_bytes(&store, "audit/checkpoints/x.json").await.unwrap(),
            b"first"
        );
    }
}
