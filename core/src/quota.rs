//! Upload quotas per hospital: how many bytes of slides a hospital may keep on the platform.
//!
//! The limit is `hospitals.upload_quota_bytes` (NULL: no limit). A hospital's usage is the size
//! of its stored slides (`slides.size_bytes`, the bytes stored) plus the declared length of
//! its unfinished, unexpired uploads: an upload reserves its whole length when it is created, so
//! two uploads started side by side cannot both squeeze under the limit.
//!
//! The upload service checks twice: when an upload is created ([`check`], before any byte is
//! sent, so the client is told at once) and when its last byte arrives ([`check_completion`],
//! which leaves the upload's own reservation out of the usage it adds the upload to), which
//! catches uploads created in parallel and a limit lowered meanwhile; a zip is checked once
//! more after unpacking, with what it unpacks to (what is stored, and recorded as the slide's
//! size), before anything is stored. Exceeding the limit is
//! [`CoreError::QuotaExceeded`], answered as HTTP 413 `quota_exceeded`.

use sqlx::Row;

use crate::db::Db;
use crate::error::{CoreError, CoreResult};

/// The hospital's upload quota in bytes; `None` when it has none.
pub async fn limit(db: &Db, hospital_id: &str) -> CoreResult<Option<i64>> {
    let row = sqlx::query("SELECT upload_quota_bytes FROM hospitals WHERE id = $1")
        .bind(hospital_id)
        .fetch_optional(db.pool())
        .await?
        .ok_or_else(|| CoreError::NotFound(format!("hospital {hospital_id}")))?;
    Ok(row.try_get::<Option<i64>, _>("upload_quota_bytes")?)
}

/// Sets (or with `None` removes) the hospital's upload quota in bytes.
///
/// A quota below the current usage is accepted: what is stored stays, new uploads are refused.
pub async fn set_limit(db: &Db, hospital_id: &str, bytes: Option<i64>) -> CoreResult<()> {
    if let Some(bytes) = bytes
        && bytes < 0
    {
        return Err(CoreError::Invalid(format!(
            "a quota cannot be negative ({bytes} bytes)"
        )));
    }
    let done = sqlx::query("UPDATE hospitals SET upload_quota_bytes = $1 WHERE id = $2")
        .bind(bytes)
        .bind(hospital_id)
        .execute(db.pool())
        .await?;
    if done.rows_affected() == 0 {
        return Err(CoreError::NotFound(format!("hospital {hospital_id}")));
    }
    Ok(())
}

/// Bytes the hospital uses: its stored slides plus its unfinished, unexpired uploads.
pub async fn usage(db: &Db, hospital_id: &str) -> CoreResult<i64> {
    usage_except(db, hospital_id, "").await
}

/// [`usage`] leaving out the reservation of upload `upload_id` (empty: none left out).
async fn usage_except(db: &Db, hospital_id: &str, upload_id: &str) -> CoreResult<i64> {
    // SUM of BIGINT is NUMERIC on PostgreSQL, which the Any driver cannot read: cast it back.
    let stored: i64 = sqlx::query(
        "SELECT CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) AS n FROM slides \
         WHERE hospital_id = $1",
    )
    .bind(hospital_id)
    .fetch_one(db.pool())
    .await?
    .try_get("n")?;
    let reserved: i64 = sqlx::query(
        "SELECT CAST(COALESCE(SUM(length), 0) AS BIGINT) AS n FROM uploads \
         WHERE hospital_id = $1 AND expires_at >= $2 AND id <> $3",
    )
    .bind(hospital_id)
    .bind(crate::clock::now())
    .bind(upload_id)
    .fetch_one(db.pool())
    .await?
    .try_get("n")?;
    Ok(stored.saturating_add(reserved))
}

/// Refuses `incoming` more bytes when they would take the hospital past its quota.
pub async fn check(db: &Db, hospital_id: &str, incoming: u64) -> CoreResult<()> {
    let Some(limit) = limit(db, hospital_id).await? else {
        return Ok(());
    };
    within(usage(db, hospital_id).await?, limit, incoming)
}

/// The check when upload `upload_id` of `incoming` bytes is complete: its own reservation is
/// already part of the usage, so it is left out before the upload's bytes are added.
pub async fn check_completion(
    db: &Db,
    hospital_id: &str,
    upload_id: &str,
    incoming: u64,
) -> CoreResult<()> {
    let Some(limit) = limit(db, hospital_id).await? else {
        return Ok(());
    };
    within(
        usage_except(db, hospital_id, upload_id).await?,
        limit,
        incoming,
    )
}

fn within(used: i64, limit: i64, incoming: u64) -> CoreResult<()> {
    let after = i128::from(used) + i128::from(incoming);
    if after > i128::from(limit) {
        return Err(CoreError::QuotaExceeded {
            used,
            limit,
            incoming,
        });
    }
    Ok(())
}

/// A byte count as people read it: GiB from one GiB up, else MiB, else KiB or bytes.
pub fn human_bytes(bytes: impl Into<i128>) -> String {
    const KIB: f64 = 1024.0;
    let bytes: i128 = bytes.into();
    // Quotas and slides are far below 2^53 bytes, where f64 is exact enough to print.
    let value = bytes as f64;
    let magnitude = value.abs();
    if magnitude >= KIB * KIB * KIB {
        format!("{:.2} GiB", value / (KIB * KIB * KIB))
    } else if magnitude >= KIB * KIB {
        format!("{:.1} MiB", value / (KIB * KIB))
    } else if magnitude >= KIB {
        format!("{:.1} KiB", value / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// What [`CoreError::QuotaExceeded`] says: the upload's size, the usage and the limit.
pub fn exceeded_message(
    used: impl std::borrow::Borrow<i64>,
    limit: impl std::borrow::Borrow<i64>,
    incoming: impl std::borrow::Borrow<u64>,
) -> String {
    let (used, limit, incoming) = (*used.borrow(), *limit.borrow(), *incoming.borrow());
    let left = (i128::from(limit) - i128::from(used)).max(0);
    format!(
        "this upload of {} would exceed your hospital's upload quota: {} of {} used, {} left; \
         ask your administrator to raise the quota, or remove slides no longer needed",
        human_bytes(incoming),
        human_bytes(used),
        human_bytes(limit),
        human_bytes(left)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(human_bytes(512i64), "512 bytes");
        assert_eq!(human_bytes(1536i64), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024i64), "5.0 MiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024u64), "3.00 GiB");
    }

    #[test]
    fn the_limit_itself_is_allowed_and_one_byte_more_is_not() {
        assert!(within(900, 1000, 100).is_ok());
        let err = within(900, 1000, 101).unwrap_err();
        assert!(matches!(
            err,
            CoreError::QuotaExceeded {
                used: 900,
                limit: 1000,
                incoming: 101
            }
        ));
        let text = err.to_string();
        assert!(text.contains("900 bytes of 1000 bytes used"), "{text}");
        assert!(text.contains("100 bytes left"), "{text}");
        // Over the limit already (it was lowered): nothing left, not a negative amount.
        assert!(exceeded_message(1200i64, 1000i64, 1u64).contains("0 bytes left"));
    }

    #[tokio::test]
    async fn limits_are_set_read_and_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("q.db").display());
        let db = Db::connect(&url).await.unwrap();
        let h = crate::accounts::create_hospital(
            &db,
            "Quota Hospital",
            crate::accounts::HospitalKind::Spoke,
        )
        .await
        .unwrap();
        assert_eq!(limit(&db, &h.id).await.unwrap(), None);
        assert!(set_limit(&db, &h.id, Some(-1)).await.is_err());
        set_limit(&db, &h.id, Some(1000)).await.unwrap();
        assert_eq!(limit(&db, &h.id).await.unwrap(), Some(1000));
        assert_eq!(usage(&db, &h.id).await.unwrap(), 0);
        check(&db, &h.id, 1000).await.unwrap();
        assert!(check(&db, &h.id, 1001).await.is_err());
        set_limit(&db, &h.id, None).await.unwrap();
        check(&db, &h.id, u64::MAX).await.unwrap();
        assert!(matches!(
            set_limit(&db, "no-such-hospital", Some(1)).await,
            Err(CoreError::NotFound(_))
        ));
    }
}
