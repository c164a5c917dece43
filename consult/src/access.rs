//! Who may see a case and, through it, another hospital's slides.
//!
//! Deny by default. The spoke's clinical staff see their own cases. A hub sees a case once it
//! is submitted there, for as long as it is open plus `access_after_close_s`; within the hub,
//! pathologists read slides, admins see the worklist to assign work. Everyone else gets
//! "not found", exactly as for an id that does not exist.

use pathfed_core::Db;
use pathfed_core::accounts::{Principal, Role};
use pathfed_core::db::now;
use sqlx::Row;

use crate::cases::{self, Case, Status};
use crate::error::{ConsultError, ConsultResult};

/// How a user relates to a case they may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// Clinical staff of the submitting hospital.
    Spoke,
    /// A pathologist of the hub it was sent to, within the access window.
    HubPathologist,
    /// An admin of that hub: worklist and assignment, no slides.
    HubAdmin,
}

/// Whether a hub's window on a case is still open at `at`.
pub fn hub_window_open(case: &Case, access_after_close_s: u64, at: i64) -> bool {
    case.status != Status::Draft
        && case
            .closed_at
            .is_none_or(|closed| at < closed.saturating_add(access_after_close_s as i64))
}

/// How `user` relates to `case`, or `None` when they may not see it.
pub fn relation(user: &Principal, case: &Case, access_after_close_s: u64) -> Option<Relation> {
    if cases::is_spoke_member(user, case) {
        return Some(Relation::Spoke);
    }
    let at_hub = case.hub_id.as_deref() == Some(user.hospital.id.as_str());
    if !at_hub || !hub_window_open(case, access_after_close_s, now()) {
        return None;
    }
    match user.role {
        Role::Pathologist => Some(Relation::HubPathologist),
        // A platform admin administers its own hospital as its admin does, and no other.
        Role::Admin | Role::PlatformAdmin => Some(Relation::HubAdmin),
        Role::Submitter | Role::Researcher => None,
    }
}

/// Loads a case `user` may see; "not found" otherwise.
pub async fn visible_case(
    db: &Db,
    user: &Principal,
    id: &str,
    access_after_close_s: u64,
) -> ConsultResult<(Case, Relation)> {
    let case = match cases::load(db, id).await {
        Ok(case) => case,
        Err(ConsultError::NotFound(_)) => return Err(ConsultError::NotFound("case")),
        Err(e) => return Err(e),
    };
    match relation(user, &case, access_after_close_s) {
        Some(relation) => Ok((case, relation)),
        None => Err(ConsultError::NotFound("case")),
    }
}

/// Whether `user` may read another hospital's slide because a case consulting their hub
/// includes it (and the hub's window on that case is open).
pub async fn slide_readable_through_case(
    db: &Db,
    user: &Principal,
    slide_id: &str,
    access_after_close_s: u64,
) -> ConsultResult<bool> {
    if user.role != Role::Pathologist {
        return Ok(false);
    }
    let open_since = now().saturating_sub(access_after_close_s as i64);
    let row = sqlx::query(
        "SELECT 1 AS one FROM case_slides cs JOIN cases c ON c.id = cs.case_id \
         WHERE cs.slide_id = $1 AND c.hub_id = $2 AND c.status <> 'draft' \
         AND (c.closed_at IS NULL OR c.closed_at > $3) LIMIT 1",
    )
    .bind(slide_id)
    .bind(&user.hospital.id)
    .bind(open_since)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.is_some())
}

/// Whether a slide belongs to a case that has left the spoke's hands (and so must not be
/// deleted: the hub is reading it or the report refers to it).
pub async fn slide_in_submitted_case(db: &Db, slide_id: &str) -> ConsultResult<bool> {
    let row = sqlx::query(
        "SELECT count(*) AS n FROM case_slides cs JOIN cases c ON c.id = cs.case_id \
         WHERE cs.slide_id = $1 AND c.status NOT IN ('draft', 'cancelled')",
    )
    .bind(slide_id)
    .fetch_one(db.pool())
    .await?;
    let n: i64 = row.try_get("n")?;
    Ok(n > 0)
}

/// Removes a slide from draft and cancelled cases before the slide itself is deleted.
pub async fn forget_slide(db: &Db, slide_id: &str) -> ConsultResult<()> {
    sqlx::query("DELETE FROM annotations WHERE slide_id = $1")
        .bind(slide_id)
        .execute(db.pool())
        .await?;
    sqlx::query("DELETE FROM case_slides WHERE slide_id = $1")
        .bind(slide_id)
        .execute(db.pool())
        .await?;
    Ok(())
}
