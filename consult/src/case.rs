//! The case record ([`Case`]) and its [`Status`] and [`Urgency`]: what the workflow in
//! `cases` stores and moves, and what AI support (`ai`) and the other steps read. Re-exported
//! from `cases`, the public path.

use serde::{Deserialize, Serialize};

use crate::error::{ConsultError, ConsultResult};

/// Where a case stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Being prepared by the spoke.
    Draft,
    /// Waiting in the hub's worklist.
    Submitted,
    /// A hub pathologist has it.
    Assigned,
    /// The first read is entered.
    Diagnosed,
    /// A second pathologist is reading blind.
    InDoubleCheck,
    /// The reads disagree; both readers agree a final diagnosis.
    Adjudication,
    /// The final diagnosis is settled.
    ReadyForSignOut,
    /// Reported back to the spoke.
    SignedOut,
    /// Withdrawn before anyone read it.
    Cancelled,
}

impl Status {
    /// Every status, in workflow order.
    pub const ALL: [Status; 9] = [
        Status::Draft,
        Status::Submitted,
        Status::Assigned,
        Status::Diagnosed,
        Status::InDoubleCheck,
        Status::Adjudication,
        Status::ReadyForSignOut,
        Status::SignedOut,
        Status::Cancelled,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Submitted => "submitted",
            Status::Assigned => "assigned",
            Status::Diagnosed => "diagnosed",
            Status::InDoubleCheck => "in_double_check",
            Status::Adjudication => "adjudication",
            Status::ReadyForSignOut => "ready_for_sign_out",
            Status::SignedOut => "signed_out",
            Status::Cancelled => "cancelled",
        }
    }

    /// Parses a stored or requested name.
    pub fn parse(s: &str) -> ConsultResult<Self> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| ConsultError::Invalid(format!("unknown case status {s:?}")))
    }

    /// Closed cases change no more (amendments aside).
    pub fn is_closed(self) -> bool {
        matches!(self, Status::SignedOut | Status::Cancelled)
    }

    /// While the first read may still be unseen by a second reader: annotations and the read
    /// of the hub stay with their author.
    pub fn is_blind(self) -> bool {
        matches!(
            self,
            Status::Assigned | Status::Diagnosed | Status::InDoubleCheck
        )
    }
}

/// How soon the spoke needs the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Urgency {
    /// Normal turnaround.
    Routine,
    /// Ahead of routine cases.
    Urgent,
}

impl Urgency {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::Routine => "routine",
            Urgency::Urgent => "urgent",
        }
    }

    pub(crate) fn parse(s: &str) -> ConsultResult<Self> {
        match s {
            "routine" => Ok(Urgency::Routine),
            "urgent" => Ok(Urgency::Urgent),
            other => Err(ConsultError::Invalid(format!(
                "urgency must be routine or urgent, not {other:?}"
            ))),
        }
    }
}

/// A case as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Case {
    /// Id.
    pub id: String,
    /// Submitting hospital.
    pub spoke_id: String,
    /// Submitting hospital's name.
    pub spoke_name: String,
    /// Reading hospital, once chosen.
    pub hub_id: Option<String>,
    /// Reading hospital's name.
    pub hub_name: Option<String>,
    /// Who created it.
    pub created_by: String,
    /// Keyed hash of the patient id (not serialised to clients).
    #[serde(skip)]
    pub patient_hash: String,
    /// Encrypted patient id (not serialised to clients).
    #[serde(skip)]
    pub patient_cipher: String,
    /// Age band, as chosen (`unknown` where it is not known; never a default).
    pub age_band: String,
    /// Sex, as chosen (`unknown` where it is not known; never a default).
    pub sex: String,
    /// Organ, lower case.
    pub organ: String,
    /// Specimen description.
    pub specimen: String,
    /// What the spoke asks.
    pub clinical_question: String,
    /// Urgency.
    pub urgency: Urgency,
    /// Taxonomy the diagnoses use.
    pub taxonomy: String,
    /// Status.
    pub status: Status,
    /// First reader.
    pub primary_reader: Option<String>,
    /// Second (blind) reader.
    pub second_reader: Option<String>,
    /// Whether the two reads agreed.
    pub concordant: Option<bool>,
    /// Final diagnosis code.
    pub final_code: Option<String>,
    /// Final findings.
    pub final_findings: Option<String>,
    /// Who decided the final diagnosis after adjudication.
    pub final_by: Option<String>,
    /// Adjudication note.
    pub final_note: Option<String>,
    /// Latest report version (0: none yet).
    pub report_version: i64,
    /// Latest report version the spoke has opened.
    pub report_seen_version: i64,
    /// Created (unix seconds).
    pub created_at: i64,
    /// Submitted.
    pub submitted_at: Option<i64>,
    /// Signed out or cancelled.
    pub closed_at: Option<i64>,
    /// Last change.
    pub updated_at: i64,
}

impl Case {
    /// Whether `user_id` is one of the case's two readers.
    pub fn is_reader(&self, user_id: &str) -> bool {
        [
            self.primary_reader.as_deref(),
            self.second_reader.as_deref(),
        ]
        .contains(&Some(user_id))
    }
}
