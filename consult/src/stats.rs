//! Concordance of the blind double-check, per hub and per taxonomy: how often the second read
//! agreed with the first, a quality measure hubs report on.

use pathfed_core::Db;
use serde::Serialize;
use sqlx::Row;

use crate::error::ConsultResult;

/// Agreement counts for one hub and taxonomy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Concordance {
    /// Hub id.
    pub hub_id: String,
    /// Hub name.
    pub hub: String,
    /// Taxonomy id.
    pub taxonomy: String,
    /// Cases double-checked.
    pub double_checked: i64,
    /// Of which the reads agreed.
    pub concordant: i64,
    /// `concordant / double_checked`.
    pub rate: f64,
}

/// Concordance of every hub (or only `hub_id`), per taxonomy.
pub async fn concordance(db: &Db, hub_id: Option<&str>) -> ConsultResult<Vec<Concordance>> {
    let rows = sqlx::query(
        "SELECT c.hub_id, h.name, c.taxonomy, count(*) AS n, \
         sum(CASE WHEN c.concordant = 1 THEN 1 ELSE 0 END) AS agreed \
         FROM cases c JOIN hospitals h ON h.id = c.hub_id \
         WHERE c.concordant IS NOT NULL AND ($1 = '' OR c.hub_id = $1) \
         GROUP BY c.hub_id, h.name, c.taxonomy ORDER BY h.name, c.taxonomy",
    )
    .bind(hub_id.unwrap_or(""))
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            let n: i64 = row.try_get("n")?;
            let agreed: i64 = row.try_get("agreed")?;
            Ok(Concordance {
                hub_id: row.try_get("hub_id")?,
                hub: row.try_get("name")?,
                taxonomy: row.try_get("taxonomy")?,
                double_checked: n,
                concordant: agreed,
                rate: if n > 0 { agreed as f64 / n as f64 } else { 0.0 },
            })
        })
        .collect()
}
