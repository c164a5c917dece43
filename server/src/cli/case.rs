//! `pathfed case …`: create, submit, list and show cases, and fetch or verify reports, through
//! a server's API with an API token.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use pathfed_consult::report::{MAX_REPORT_BYTES, pdf_claim};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::api::{Api, ServerArgs};

#[derive(Debug, Subcommand)]
pub enum CaseCommand {
    /// Create a draft case, optionally uploading or attaching slides.
    Create {
        #[command(flatten)]
        server: ServerArgs,
        /// The patient's id at your hospital (stored encrypted).
        #[arg(long)]
        patient_id: String,
        /// Age band: 0-9, 10-19, … 80-89, 90+ or unknown.
        #[arg(long)]
        age_band: String,
        /// female, male, other or unknown.
        #[arg(long)]
        sex: String,
        /// Organ, e.g. stomach.
        #[arg(long)]
        organ: String,
        /// Specimen, e.g. "endoscopic biopsy, antrum".
        #[arg(long)]
        specimen: String,
        /// The question for the pathologist.
        #[arg(long)]
        question: String,
        /// routine or urgent.
        #[arg(long, default_value = "routine")]
        urgency: String,
        /// Hub to send it to (default: your hospital's default hub).
        #[arg(long)]
        hub: Option<String>,
        /// Already uploaded slides to attach (ids).
        #[arg(long = "slide")]
        slides: Vec<String>,
        /// Slide files to upload and attach.
        #[arg(long = "upload")]
        uploads: Vec<PathBuf>,
        /// Submit it right away.
        #[arg(long)]
        submit: bool,
        /// Where unfinished uploads are remembered, so a rerun resumes them.
        #[arg(long, env = "PATHFED_UPLOAD_STATE")]
        state_file: Option<PathBuf>,
    },
    /// Send a draft to its hub.
    Submit {
        #[command(flatten)]
        server: ServerArgs,
        /// Case id.
        id: String,
    },
    /// List your hospital's cases (sent, or received as a hub).
    List {
        #[command(flatten)]
        server: ServerArgs,
        /// Only this status (draft, submitted, assigned, …, signed_out).
        #[arg(long)]
        status: Option<String>,
        /// Only routine or urgent.
        #[arg(long)]
        urgency: Option<String>,
        /// Only this organ.
        #[arg(long)]
        organ: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one case (JSON).
    Show {
        #[command(flatten)]
        server: ServerArgs,
        /// Case id.
        id: String,
    },
    /// Download a report (PDF), or verify a downloaded one against the server.
    Report {
        #[command(flatten)]
        server: ServerArgs,
        /// Case id (to download).
        #[arg(required_unless_present = "verify")]
        id: Option<String>,
        /// Report version (default: the latest).
        #[arg(long)]
        version: Option<i64>,
        /// Output file.
        #[arg(long, required_unless_present = "verify")]
        out: Option<PathBuf>,
        /// A report PDF to check: its hash and bytes must match what the server issued.
        #[arg(long, conflicts_with_all = ["id", "out"])]
        verify: Option<PathBuf>,
    },
}

/// Runs a case command.
pub async fn run(cmd: CaseCommand) -> anyhow::Result<()> {
    match cmd {
        CaseCommand::Create {
            server,
            patient_id,
            age_band,
            sex,
            organ,
            specimen,
            question,
            urgency,
            hub,
            slides,
            uploads,
            submit,
            state_file,
        } => {
            let api = Api::new(&server.server, &server.token)?;
            let case = api
                .post(
                    "/api/v1/cases",
                    &json!({
                        "patient_id": patient_id, "age_band": age_band, "sex": sex,
                        "organ": organ, "specimen": specimen, "clinical_question": question,
                        "urgency": urgency, "hub": hub,
                    }),
                )
                .await
                .context("creating the case")?;
            let id = case["id"].as_str().unwrap_or_default().to_string();
            println!("case {id} created (draft)");
            let mut all = slides;
            if !uploads.is_empty() {
                all.extend(
                    super::upload::upload_files(
                        &server.server,
                        &server.token,
                        state_file.as_deref(),
                        32 << 20,
                        &uploads,
                    )
                    .await?,
                );
            }
            for slide in &all {
                api.attach(&id, slide).await?;
            }
            if !all.is_empty() {
                println!("attached {} slide(s)", all.len());
            }
            if submit {
                let case = api
                    .post(&format!("/api/v1/cases/{id}/submit"), &Value::Null)
                    .await
                    .context("submitting the case")?;
                println!(
                    "submitted to {}",
                    case["hub_name"].as_str().unwrap_or("the hub")
                );
            }
            println!("{id}");
        }
        CaseCommand::Submit { server, id } => {
            let api = Api::new(&server.server, &server.token)?;
            let case = api
                .post(&format!("/api/v1/cases/{id}/submit"), &Value::Null)
                .await
                .with_context(|| format!("submitting case {id}"))?;
            println!(
                "case {id} submitted to {}",
                case["hub_name"].as_str().unwrap_or("the hub")
            );
        }
        CaseCommand::List {
            server,
            status,
            urgency,
            organ,
            json,
        } => {
            let api = Api::new(&server.server, &server.token)?;
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            for (key, value) in [("status", status), ("urgency", urgency), ("organ", organ)] {
                if let Some(value) = value {
                    query.append_pair(key, &value);
                }
            }
            let listed = api
                .get(&format!("/api/v1/cases?{}", query.finish()))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&listed["cases"])?);
                return Ok(());
            }
            println!("id\tstatus\turgency\torgan\tfrom\tto");
            for case in listed["cases"].as_array().into_iter().flatten() {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}{}",
                    case["id"].as_str().unwrap_or_default(),
                    case["status"].as_str().unwrap_or_default(),
                    case["urgency"].as_str().unwrap_or_default(),
                    case["organ"].as_str().unwrap_or_default(),
                    case["spoke_name"].as_str().unwrap_or_default(),
                    case["hub_name"].as_str().unwrap_or("-"),
                    if case["new_report"] == json!(true) {
                        "\tNEW REPORT"
                    } else {
                        ""
                    }
                );
            }
        }
        CaseCommand::Show { server, id } => {
            let api = Api::new(&server.server, &server.token)?;
            let case = api.get(&format!("/api/v1/cases/{id}")).await?;
            println!("{}", serde_json::to_string_pretty(&case)?);
        }
        CaseCommand::Report {
            server,
            id,
            version,
            out,
            verify,
        } => {
            let api = Api::new(&server.server, &server.token)?;
            if let Some(file) = verify {
                return verify_report(&api, &file).await;
            }
            let (Some(id), Some(out)) = (id, out) else {
                bail!("give a case id and --out FILE, or --verify FILE");
            };
            let version = match version {
                Some(v) => v,
                None => {
                    let listed = api.get(&format!("/api/v1/cases/{id}/reports")).await?;
                    listed["reports"]
                        .as_array()
                        .and_then(|r| r.last())
                        .and_then(|r| r["version"].as_i64())
                        .with_context(|| format!("case {id} has no report yet"))?
                }
            };
            let pdf = api
                .get_bytes(&format!("/api/v1/cases/{id}/reports/{version}/report.pdf"))
                .await?;
            std::fs::write(&out, &pdf).with_context(|| format!("writing {}", out.display()))?;
            println!(
                "{}: report v{version} of case {id}, SHA-256 {}",
                out.display(),
                hex::encode(Sha256::digest(&pdf))
            );
        }
    }
    Ok(())
}

/// Checks a report PDF: it names a case, version and content hash, and the server issued
/// exactly these bytes with that hash.
async fn verify_report(api: &Api, file: &std::path::Path) -> anyhow::Result<()> {
    let size = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    if size > MAX_REPORT_BYTES as u64 {
        bail!("{} is too large to be a pathfed report", file.display());
    }
    let pdf = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let claim = pdf_claim(&pdf).with_context(|| {
        format!(
            "{} is not a pathfed report (no report marker)",
            file.display()
        )
    })?;
    let issued = api
        .get(&format!(
            "/api/v1/cases/{}/reports/{}",
            claim.case_id, claim.version
        ))
        .await
        .with_context(|| {
            format!(
                "looking up report v{} of case {}",
                claim.version, claim.case_id
            )
        })?;
    let digest = hex::encode(Sha256::digest(&pdf));
    if issued["content_hash"].as_str() != Some(claim.content_hash.as_str()) {
        bail!(
            "NOT VERIFIED: the report's hash {} is not the one issued for case {} v{}",
            claim.content_hash,
            claim.case_id,
            claim.version
        );
    }
    if issued["pdf_sha256"].as_str() != Some(digest.as_str()) {
        bail!(
            "NOT VERIFIED: {} differs from the PDF issued for case {} v{} (file altered)",
            file.display(),
            claim.case_id,
            claim.version
        );
    }
    println!(
        "verified: report v{} of case {}, signed by {} ({}), content SHA-256 {}",
        claim.version,
        claim.case_id,
        issued["signed_by"].as_str().unwrap_or("?"),
        issued["signed_at"].as_i64().unwrap_or_default(),
        claim.content_hash
    );
    Ok(())
}
