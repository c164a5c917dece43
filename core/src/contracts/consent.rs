//! Reads of the `opt_outs` table, which consultation (`pathfed_consult::research`) owns and
//! writes: patients who refused research use, as their hospital's keyed hash. Consultation
//! checks it before queueing curation, and the research tier before it publishes anything.

use sqlx::{AnyConnection, Row};

use crate::db::Db;
use crate::error::CoreResult;

/// A patient who opted out of research use.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OptedOut {
    /// The patient's hospital.
    pub hospital_id: String,
    /// The hospital's keyed hash of the patient id.
    pub patient_hash: String,
}

/// Whether the patient opted out, read on `conn` so it can share the caller's transaction.
pub async fn is_opted_out(
    conn: &mut AnyConnection,
    hospital_id: &str,
    patient_hash: &str,
) -> CoreResult<bool> {
    Ok(
        sqlx::query("SELECT 1 AS one FROM opt_outs WHERE hospital_id = $1 AND patient_hash = $2")
            .bind(hospital_id)
            .bind(patient_hash)
            .fetch_optional(&mut *conn)
            .await?
            .is_some(),
    )
}

/// Every patient who opted out.
pub async fn all(db: &Db) -> CoreResult<Vec<OptedOut>> {
    let rows = sqlx::query("SELECT hospital_id, patient_hash FROM opt_outs")
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|row| {
            Ok(OptedOut {
                hospital_id: row.try_get("hospital_id")?,
                patient_hash: row.try_get("patient_hash")?,
            })
        })
        .collect()
}
