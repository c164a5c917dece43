//! What a referring hospital shares with the hub reading its cases, so that a hub pathologist
//! can check the patient's identity: the slide label image and the patient's local id. Both
//! are columns of `hospitals` (migration `0010_clinical.sql`), on by default; this module is
//! the only code that reads or writes them, and the slide API and consultation decide what
//! they mean (who sees a label, what the case panel shows).

use std::str::FromStr;

use sqlx::Row;

use crate::db::Db;
use crate::error::{CoreError, CoreResult};

/// One thing a referring hospital may share with the hub reading its cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedWithHub {
    /// The slide label image (it may carry the patient's name and id).
    Label,
    /// The patient's local id, shown in the hub's case panel.
    PatientId,
}

impl SharedWithHub {
    /// Both, in the order the command line lists them.
    pub const ALL: [SharedWithHub; 2] = [SharedWithHub::Label, SharedWithHub::PatientId];

    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            SharedWithHub::Label => "label",
            SharedWithHub::PatientId => "patient-id",
        }
    }
}

impl FromStr for SharedWithHub {
    type Err = CoreError;
    fn from_str(s: &str) -> CoreResult<Self> {
        SharedWithHub::ALL
            .into_iter()
            .find(|what| what.as_str() == s)
            .ok_or_else(|| {
                CoreError::Invalid(format!("unknown shared item {s:?} (label or patient-id)"))
            })
    }
}

/// What a referring hospital shares with the hub reading its cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubSharing {
    /// Whether the hub's pathologists see the slide labels.
    pub label: bool,
    /// Whether they see the patient's local id.
    pub patient_id: bool,
}

impl HubSharing {
    /// Whether `what` is shared.
    pub fn shares(self, what: SharedWithHub) -> bool {
        match what {
            SharedWithHub::Label => self.label,
            SharedWithHub::PatientId => self.patient_id,
        }
    }
}

/// What `hospital_id` shares with the hubs reading its cases; nothing for an unknown hospital
/// (deny by default).
pub async fn hub_sharing(db: &Db, hospital_id: &str) -> CoreResult<HubSharing> {
    let row = sqlx::query(
        "SELECT share_label_with_hub, share_patient_id_with_hub FROM hospitals WHERE id = $1",
    )
    .bind(hospital_id)
    .fetch_optional(db.pool())
    .await?;
    let Some(row) = row else {
        return Ok(HubSharing {
            label: false,
            patient_id: false,
        });
    };
    Ok(HubSharing {
        label: row.try_get::<i64, _>("share_label_with_hub")? != 0,
        patient_id: row.try_get::<i64, _>("share_patient_id_with_hub")? != 0,
    })
}

/// Turns sharing `what` with the hub reading its cases on or off for `hospital_id`.
pub async fn set_shared_with_hub(
    db: &Db,
    hospital_id: &str,
    what: SharedWithHub,
    shared: bool,
) -> CoreResult<()> {
    // One fixed statement per column: nothing is formatted into the SQL.
    let sql = match what {
        SharedWithHub::Label => "UPDATE hospitals SET share_label_with_hub = $1 WHERE id = $2",
        SharedWithHub::PatientId => {
            "UPDATE hospitals SET share_patient_id_with_hub = $1 WHERE id = $2"
        }
    };
    let done = sqlx::query(sql)
        .bind(i64::from(shared))
        .bind(hospital_id)
        .execute(db.pool())
        .await?;
    if done.rows_affected() == 0 {
        return Err(CoreError::NotFound(format!("hospital {hospital_id:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for what in SharedWithHub::ALL {
            assert_eq!(what.as_str().parse::<SharedWithHub>().ok(), Some(what));
        }
        assert!("labels".parse::<SharedWithHub>().is_err());
        let sharing = HubSharing {
            label: true,
            patient_id: false,
        };
        assert!(sharing.shares(SharedWithHub::Label));
        assert!(!sharing.shares(SharedWithHub::PatientId));
    }
}
