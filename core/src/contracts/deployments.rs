//! Reads of the `deployments` table, which the model registry (`pathfed_models::registry`)
//! owns and writes. Consultation queues AI support for what is deployed, inside the
//! transaction that attaches or submits slides, so the read takes that transaction's
//! connection.

use sqlx::{AnyConnection, Row};

use crate::error::CoreResult;

/// The model version deployed for an (organ, taxonomy) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: i64,
}

/// The model deployed for `organ` in `taxonomy`, if any, read on `conn`.
pub async fn deployed_for(
    conn: &mut AnyConnection,
    organ: &str,
    taxonomy: &str,
) -> CoreResult<Option<Deployed>> {
    let row = sqlx::query(
        "SELECT model_name, model_version FROM deployments WHERE organ = $1 AND taxonomy = $2",
    )
    .bind(organ)
    .bind(taxonomy)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(Deployed {
        model: row.try_get("model_name")?,
        version: row.try_get("model_version")?,
    }))
}
