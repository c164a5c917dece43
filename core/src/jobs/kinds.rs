//! Every job kind, declared once: its stored name, payload, dedupe key, attempts and the pool
//! that runs it. The crate that enqueues a kind and the crate that handles it both name the
//! declaration, so a renamed kind or a changed payload is a compile error instead of a job that
//! nobody claims. The declarations live in core because the two sides must not know each other
//! (consultation enqueues curation, which only the research tier may run).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize as SerializeDerive};

/// Which worker pool runs a kind: research-tier work runs several at once, while training and
/// inference each get a pool of one so an hours-long training never holds up AI support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolKind {
    /// Curation, opt-out removal, patch extraction.
    Research,
    /// Training runs.
    Training,
    /// AI support on clinical slides.
    Inference,
}

/// A job kind's contract between the code that enqueues it and its handler.
pub trait JobKind: 'static {
    /// The kind as stored in `jobs.kind` (device variants add a suffix, see [`Train`]).
    const NAME: &'static str;
    /// The pool that runs it.
    const POOL: PoolKind;
    /// Attempts allowed before it fails for good.
    const MAX_ATTEMPTS: i64;
    /// What the handler is given.
    type Payload: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// The key that makes enqueueing this payload idempotent, if the kind has one.
    fn dedupe_key(_payload: &Self::Payload) -> Option<String> {
        None
    }

    /// The stored kind for this payload: [`Self::NAME`] unless the kind has variants.
    fn stored_kind(_payload: &Self::Payload) -> String {
        Self::NAME.to_string()
    }
}

/// Turns a signed-out slide into a research slide (consultation → research tier).
#[derive(Debug, Clone, Copy)]
pub struct Curate;

/// The slide of a signed-out case to curate, and the report version it carries.
#[derive(Debug, Clone, PartialEq, Eq, SerializeDerive, Deserialize)]
pub struct CuratePayload {
    /// The signed-out case.
    pub case_id: String,
    /// The clinical slide.
    pub slide_id: String,
    /// The report version whose diagnosis labels the research slide.
    pub report_version: i64,
}

impl JobKind for Curate {
    const NAME: &'static str = "curate";
    const POOL: PoolKind = PoolKind::Research;
    const MAX_ATTEMPTS: i64 = 3;
    type Payload = CuratePayload;

    /// One curation per slide and report version.
    fn dedupe_key(p: &CuratePayload) -> Option<String> {
        Some(format!(
            "{}:{}:{}",
            Self::NAME,
            p.slide_id,
            p.report_version
        ))
    }
}

/// Removes an opted-out patient's research data (consultation → research tier).
#[derive(Debug, Clone, Copy)]
pub struct ForgetPatient;

/// The patient, as their hospital's keyed hash.
#[derive(Debug, Clone, PartialEq, Eq, SerializeDerive, Deserialize)]
pub struct ForgetPatientPayload {
    /// The patient's hospital.
    pub hospital_id: String,
    /// The hospital's keyed hash of the patient id.
    pub patient_hash: String,
}

impl JobKind for ForgetPatient {
    const NAME: &'static str = "forget-patient";
    const POOL: PoolKind = PoolKind::Research;
    // Removal must happen: it outlasts a store or database outage of several backoffs.
    const MAX_ATTEMPTS: i64 = 10;
    // No key: asked twice, a second pass finds slides curated while the first ran.
    type Payload = ForgetPatientPayload;
}

/// Builds a dataset version's patch shards.
#[derive(Debug, Clone, Copy)]
pub struct Extract;

/// The dataset version to extract.
#[derive(Debug, Clone, PartialEq, Eq, SerializeDerive, Deserialize)]
pub struct ExtractPayload {
    /// Dataset name.
    pub dataset: String,
    /// Version number.
    pub version: i64,
}

impl JobKind for Extract {
    const NAME: &'static str = "extract";
    const POOL: PoolKind = PoolKind::Research;
    const MAX_ATTEMPTS: i64 = 3;
    type Payload = ExtractPayload;

    fn dedupe_key(p: &ExtractPayload) -> Option<String> {
        Some(format!("{}:{}:{}", Self::NAME, p.dataset, p.version))
    }
}

/// Runs (or resumes) a training run on one device.
#[derive(Debug, Clone, Copy)]
pub struct Train;

/// The run to train, and where.
#[derive(Debug, Clone, PartialEq, Eq, SerializeDerive, Deserialize)]
pub struct TrainPayload {
    /// The training run.
    pub run: String,
    /// Continue from the run's checkpoints.
    #[serde(default)]
    pub resume: bool,
    /// The device it trains on (`flex`, `cuda`, `wgpu`).
    #[serde(default = "default_device")]
    pub device: String,
}

fn default_device() -> String {
    CPU_DEVICE.to_string()
}

/// The device every build has.
pub const CPU_DEVICE: &str = "flex";

impl Train {
    /// The stored kind of training on `device`: workers claim only kinds their build can run,
    /// so a CUDA run waits for a CUDA worker.
    pub fn kind_for_device(device: &str) -> String {
        if device == CPU_DEVICE {
            Self::NAME.to_string()
        } else {
            format!("{}-{device}", Self::NAME)
        }
    }
}

impl JobKind for Train {
    const NAME: &'static str = "train";
    const POOL: PoolKind = PoolKind::Training;
    // A failed training is a result to read, not something to repeat blindly (resume
    // continues from the checkpoints).
    const MAX_ATTEMPTS: i64 = 1;
    type Payload = TrainPayload;

    fn stored_kind(p: &TrainPayload) -> String {
        Self::kind_for_device(&p.device)
    }
}

/// Embeds a dataset version's patches with a frozen encoder into the embedding store.
#[derive(Debug, Clone, Copy)]
pub struct Embed;

/// The version, the encoder and the device.
#[derive(Debug, Clone, PartialEq, Eq, SerializeDerive, Deserialize)]
pub struct EmbedPayload {
    /// Dataset name.
    pub dataset: String,
    /// Version number.
    pub version: i64,
    /// Encoder name in the pretrained folder.
    pub encoder: String,
    /// The device it runs on (`flex`, `cuda`, `wgpu`).
    #[serde(default = "default_device")]
    pub device: String,
}

impl Embed {
    /// The stored kind of embedding on `device`, as [`Train::kind_for_device`].
    pub fn kind_for_device(device: &str) -> String {
        if device == CPU_DEVICE {
            Self::NAME.to_string()
        } else {
            format!("{}-{device}", Self::NAME)
        }
    }
}

impl JobKind for Embed {
    const NAME: &'static str = "embed";
    // The device's pool: an encoder competes with training for the same GPU.
    const POOL: PoolKind = PoolKind::Training;
    // A retry resumes at the first slide not yet stored.
    const MAX_ATTEMPTS: i64 = 3;
    // No key: asked again after it finished, it runs again and reports what it reused; the
    // API returns a job of the same work that is still active instead of queueing another.
    type Payload = EmbedPayload;

    fn stored_kind(p: &EmbedPayload) -> String {
        Self::kind_for_device(&p.device)
    }
}

/// Runs a deployed model version on a clinical slide.
#[derive(Debug, Clone, Copy)]
pub struct Infer;

/// The slide and the model version to run on it.
#[derive(Debug, Clone, PartialEq, Eq, SerializeDerive, Deserialize)]
pub struct InferPayload {
    /// The clinical slide.
    pub slide_id: String,
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: i64,
}

impl Infer {
    /// Dedupe keys of a slide's runs start with this, so its runs can be listed.
    pub fn slide_key_prefix(slide_id: &str) -> String {
        format!("{}:{slide_id}:", Self::NAME)
    }
}

impl JobKind for Infer {
    const NAME: &'static str = "infer";
    const POOL: PoolKind = PoolKind::Inference;
    const MAX_ATTEMPTS: i64 = 3;
    type Payload = InferPayload;

    /// The automatic run: at most one per slide and model version.
    fn dedupe_key(p: &InferPayload) -> Option<String> {
        Some(format!(
            "{}{}@{}",
            Self::slide_key_prefix(&p.slide_id),
            p.model,
            p.version
        ))
    }
}

/// Sends one in-app notice by e-mail (consultation). It runs in the research pool, beside
/// curation, rather than behind hour-long inference or training runs: a send takes seconds.
#[derive(Debug, Clone, Copy)]
pub struct NotifyEmail;

/// The notice to send; the handler reads the rest (recipient, case, hospitals) when it runs,
/// so no address or case detail is copied into the queue.
#[derive(Debug, Clone, PartialEq, Eq, SerializeDerive, Deserialize)]
pub struct NotifyEmailPayload {
    /// The `notifications` row.
    pub notification_id: String,
}

impl JobKind for NotifyEmail {
    const NAME: &'static str = "notify-email";
    const POOL: PoolKind = PoolKind::Research;
    // Outlasts a mail server's maintenance: the default backoffs add up to about 3½ hours.
    const MAX_ATTEMPTS: i64 = 12;
    type Payload = NotifyEmailPayload;

    /// One e-mail per notice.
    fn dedupe_key(p: &NotifyEmailPayload) -> Option<String> {
        Some(format!("{}:{}", Self::NAME, p.notification_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_kinds_follow_the_device() {
        assert_eq!(Train::kind_for_device("flex"), "train");
        assert_eq!(Train::kind_for_device("cuda"), "train-cuda");
    }

    #[test]
    fn old_training_payloads_train_on_the_cpu() {
        let p: TrainPayload =
            serde_json::from_value(serde_json::json!({"run": "r1"})).expect("payload");
        assert_eq!((p.device.as_str(), p.resume), ("flex", false));
    }

    #[test]
    fn keys_name_their_subject() {
        let infer = InferPayload {
            slide_id: "s1".into(),
            model: "m".into(),
            version: 2,
        };
        assert_eq!(Infer::dedupe_key(&infer).as_deref(), Some("infer:s1:m@2"));
        let curate = CuratePayload {
            case_id: "c".into(),
            slide_id: "s1".into(),
            report_version: 3,
        };
        assert_eq!(Curate::dedupe_key(&curate).as_deref(), Some("curate:s1:3"));
    }
}
