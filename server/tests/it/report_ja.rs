//! The report a Japanese hospital files (病理診断報告書), on both backends: a case whose patient
//! id is typed in full-width characters, whose slide has a Japanese file name and a specimen
//! label, read by a pathologist registered with a full name and qualification. The PDF is read
//! back with poppler (its text, its fonts, a rendered page) and verified by the CLI; the sign-out
//! preview and the slide-label rules are checked on the way; the same hub switched to English
//! issues an English report.

#![allow(clippy::unwrap_used)] // Test helpers: a failed step should panic with its cause.

use std::path::Path;
use std::process::Command;

use pathfed_core::accounts::{self, ProfileChange};
use pathfed_core::audit::recent;
use pathfed_core::locale::{Lang, local_date};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

use crate::support::people::{sign_out_with, staff};
use crate::support::{As, BACKENDS, TestServer, client, submit_case, synth_slide};

const FINDINGS: &str = "中分化型管状腺癌を認めます。";
/// As a Japanese input method types it.
const PATIENT_TYPED: &str = "患者ＩＤ－０１２３";
/// As the case stores it (NFKC) and the report prints it.
const PATIENT_STORED: &str = "患者ID-0123";
const SLIDE_FILE: &str = "胃生検_標本①.svs";
const NAME: &str = "山田 太郎";
const QUALIFICATION: &str = "病理専門医";

fn read(findings: &str, slide: &str) -> Value {
    json!({
        "code": "GAS-G5",
        "findings": findings,
        "slides": [{ "slide_id": slide, "code": "GAS-G5", "findings": "" }],
    })
}

/// A tool's standard output; the test fails if it does not run or fails.
fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {tool} (poppler-utils, scripts/setup.sh): {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The PDF's text as `pdftotext -layout` reads it, runs of spaces made one.
fn pdf_text(pdf: &Path) -> String {
    let text = run("pdftotext", &["-layout", pdf.to_str().unwrap(), "-"]);
    text.lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every font of the PDF, as (name, embedded) from `pdffonts`.
fn pdf_fonts(pdf: &Path) -> Vec<(String, String)> {
    run("pdffonts", &[pdf.to_str().unwrap()])
        .lines()
        .skip(2)
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            // name … emb sub uni object-number generation
            assert!(columns.len() >= 6, "unexpected pdffonts line {line:?}");
            (
                columns[0].to_string(),
                columns[columns.len() - 5].to_string(),
            )
        })
        .collect()
}

/// A report PDF as the spoke downloads it, saved under `name`.
async fn download(
    server: &TestServer,
    spoke: &As<'_>,
    case: &str,
    name: &str,
) -> std::path::PathBuf {
    let (status, pdf) = spoke
        .raw(&format!("/api/v1/cases/{case}/reports/1/report.pdf"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let path = server.dir.path().join(name);
    std::fs::write(&path, pdf).unwrap();
    path
}

fn verify(server: &TestServer, token: &str, pdf: &Path) -> std::process::Output {
    server.cli(&[
        "case",
        "report",
        "--verify",
        pdf.to_str().unwrap(),
        "--server",
        &server.url,
        "--token",
        token,
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_japanese_hub_files_a_japanese_report_and_an_english_hub_an_english_one() {
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        let s = staff(&server);
        let db = server.db().await;
        let yamada = accounts::user_by_name(&db, "path1").await.unwrap();
        accounts::set_profile(
            &db,
            &yamada.id,
            &ProfileChange {
                display_name: Some(NAME.into()),
                qualification: Some(QUALIFICATION.into()),
                ..ProfileChange::default()
            },
        )
        .await
        .unwrap();

        let file = synth_slide(server.dir.path(), SLIDE_FILE, 2400, 1800, 21);
        let (case_id, slide) = submit_case(&server, &s.spoke.token, &file, PATIENT_TYPED);
        let case_path = format!("/api/v1/cases/{case_id}");
        let slide_path = format!("{case_path}/slides/{slide}");
        let preview_path = format!("{case_path}/report/preview");
        let submitted = s.spoke.ok(Method::GET, &case_path, None).await;
        assert_eq!(submitted["patient_id"], PATIENT_STORED, "{submitted}");
        let submitted_at = submitted["submitted_at"].as_i64().unwrap();

        // The spoke labels its slide while the case waits at the hub; other hub pathologists
        // cannot, nor can anyone give an overlong label.
        let labelled = s
            .spoke
            .ok(Method::PUT, &slide_path, Some(json!({"label": "  A1 "})))
            .await;
        assert_eq!(labelled, json!({"id": slide, "label": "A1"}));
        s.second
            .refused(Method::PUT, &slide_path, Some(json!({"label": "B"})), 403)
            .await;
        s.spoke
            .refused(
                Method::PUT,
                &slide_path,
                Some(json!({"label": "標".repeat(41)})),
                400,
            )
            .await;

        // Once the hub has it, the assigned pathologist labels and the spoke no longer can.
        s.first
            .ok(Method::POST, &format!("{case_path}/claim"), None)
            .await;
        s.spoke
            .refused(Method::PUT, &slide_path, Some(json!({"label": "X"})), 409)
            .await;
        s.first
            .ok(Method::PUT, &slide_path, Some(json!({"label": "A1"})))
            .await;
        let seen = s.first.ok(Method::GET, &case_path, None).await;
        assert_eq!(
            seen["slides"],
            json!([{"id": slide, "label": "A1"}]),
            "{seen}"
        );

        // No preview before the diagnosis is settled.
        s.first.refused(Method::GET, &preview_path, None, 409).await;
        s.first
            .ok(
                Method::PUT,
                &format!("{case_path}/reads/primary"),
                Some(read(FINDINGS, &slide)),
            )
            .await;
        s.second
            .ok(Method::POST, &format!("{case_path}/double-check"), None)
            .await;
        let ready = s
            .second
            .ok(
                Method::PUT,
                &format!("{case_path}/reads/second"),
                Some(read("同意見です。", &slide)),
            )
            .await;
        assert_eq!(ready["status"], "ready_for_sign_out");

        // The preview: the report as it would be issued, for a reader who may sign out only.
        let response = client()
            .get(format!("{}{preview_path}", server.url))
            .bearer_auth(&s.first.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let preview = response.text().await.unwrap();
        for expected in [
            "<html lang=\"ja\">",
            "プレビュー",
            "病理診断報告書",
            FINDINGS,
            PATIENT_STORED,
            "山田 太郎（病理専門医）",
        ] {
            assert!(preview.contains(expected), "preview lacks {expected:?}");
        }
        s.spoke.refused(Method::GET, &preview_path, None, 403).await;

        let signed = s
            .first
            .ok(Method::POST, &format!("{case_path}/sign-out"), None)
            .await;
        let content_hash = signed["content_hash"].as_str().unwrap().to_string();
        s.first.refused(Method::GET, &preview_path, None, 409).await;

        // The PDF, as poppler reads it.
        let pdf = download(&server, &s.spoke, &case_id, "report-ja.pdf").await;
        let text = pdf_text(&pdf);
        let received = local_date(submitted_at, "Asia/Tokyo", Lang::Ja);
        for expected in [
            "病理診断報告書",
            FINDINGS,
            PATIENT_STORED,
            SLIDE_FILE,
            NAME,
            QUALIFICATION,
            received.as_str(),
            "受付日",
            "60～69歳・男性",
        ] {
            assert!(
                text.contains(expected),
                "{backend:?}: the PDF text lacks {expected:?}:\n{text}"
            );
        }
        let fonts = pdf_fonts(&pdf);
        assert!(!fonts.is_empty(), "no fonts listed");
        for (name, embedded) in &fonts {
            assert_eq!(embedded, "yes", "font {name} is not embedded");
        }
        assert!(
            fonts.iter().any(|(name, _)| name.contains("IPAexGothic")),
            "{fonts:?}"
        );
        let rendered = server.dir.path().join("report-ja-page1");
        run(
            "pdftoppm",
            &[
                "-png",
                "-r",
                "50",
                "-f",
                "1",
                "-l",
                "1",
                "-singlefile",
                pdf.to_str().unwrap(),
                rendered.to_str().unwrap(),
            ],
        );
        assert!(
            std::fs::metadata(rendered.with_extension("png"))
                .unwrap()
                .len()
                > 0
        );

        // It verifies; a copy with one byte changed does not.
        let verified = verify(&server, &s.spoke.token, &pdf);
        let stdout = String::from_utf8_lossy(&verified.stdout);
        assert!(
            verified.status.success() && stdout.contains(&content_hash),
            "{stdout}{}",
            String::from_utf8_lossy(&verified.stderr)
        );
        let mut altered = std::fs::read(&pdf).unwrap();
        let at = altered.windows(6).position(|w| w == b"stream").unwrap() + 20;
        altered[at] ^= 0xff;
        let altered_path = server.dir.path().join("report-ja-altered.pdf");
        std::fs::write(&altered_path, altered).unwrap();
        let rejected = verify(&server, &s.spoke.token, &altered_path);
        assert!(!rejected.status.success());
        assert!(String::from_utf8_lossy(&rejected.stderr).contains("NOT VERIFIED"));

        // The HTML says the same, in Japanese.
        let (_, html) = s
            .spoke
            .raw(&format!("{case_path}/reports/1/report.html"))
            .await;
        let html = String::from_utf8(html).unwrap();
        for expected in [
            "<html lang=\"ja\">",
            "A1（胃生検_標本①.svs）",
            "山田 太郎（病理専門医）",
            received.as_str(),
            content_hash.as_str(),
        ] {
            assert!(html.contains(expected), "the HTML lacks {expected:?}");
        }
        // It prints with the PDF's font, which the platform serves itself.
        assert!(html.contains("url(/fonts/report.ttf)"), "{html}");
        let (status, font) = s.spoke.raw("/fonts/report.ttf").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            font.len() > 1_000_000 && font.starts_with(&[0, 1, 0, 0]),
            "a TrueType font"
        );

        // A draft takes a label when a slide is attached, and again when it is attached again;
        // an empty label clears it.
        let draft = s
            .spoke
            .ok(
                Method::POST,
                "/api/v1/cases",
                Some(json!({
                    "patient_id": "患者ID-0456", "age_band": "unknown", "sex": "unknown",
                    "organ": "stomach", "specimen": "胃生検", "clinical_question": "ご高診ください。",
                })),
            )
            .await;
        let draft_path = format!("/api/v1/cases/{}", draft["id"].as_str().unwrap());
        for label in ["B2", "B3"] {
            s.spoke
                .ok(
                    Method::POST,
                    &format!("{draft_path}/slides"),
                    Some(json!({"slide_id": slide, "label": label})),
                )
                .await;
            let listed = s.spoke.ok(Method::GET, &draft_path, None).await;
            assert_eq!(listed["slides"], json!([{"id": slide, "label": label}]));
        }
        s.spoke
            .ok(
                Method::PUT,
                &format!("{draft_path}/slides/{slide}"),
                Some(json!({"label": ""})),
            )
            .await;
        let cleared = s.spoke.ok(Method::GET, &draft_path, None).await;
        assert_eq!(cleared["slides"], json!([{"id": slide, "label": null}]));
        let actions: Vec<String> = recent(&db, 10_000)
            .await
            .unwrap()
            .into_iter()
            .map(|r| format!("{} {}", r.event.action, r.event.outcome))
            .collect();
        for expected in [
            "case.slide_label ok",
            "case.slide_label denied",
            "case.report.preview ok",
        ] {
            assert!(
                actions.iter().any(|a| a == expected),
                "no {expected} in the audit log"
            );
        }

        // The same hub working in English issues English reports, still on Tokyo's clock.
        let hub = accounts::find_hospital(&db, "Hub H")
            .await
            .unwrap()
            .unwrap();
        accounts::set_hospital_locale(&db, &hub.id, None, Some(Lang::En))
            .await
            .unwrap();
        let file = synth_slide(server.dir.path(), "gastric-biopsy.svs", 2400, 1800, 22);
        let (english_case, english_slide) = submit_case(&server, &s.spoke.token, &file, "MRN-2");
        let english_path = format!("/api/v1/cases/{english_case}");
        let submitted_at = s.spoke.ok(Method::GET, &english_path, None).await["submitted_at"]
            .as_i64()
            .unwrap();
        sign_out_with(&s.first, &s.second, &english_case, &english_slide, "GAS-G3").await;
        let pdf = download(&server, &s.spoke, &english_case, "report-en.pdf").await;
        let text = pdf_text(&pdf);
        let received = local_date(submitted_at, "Asia/Tokyo", Lang::En);
        for expected in ["Pathology Report", "Received", received.as_str(), NAME] {
            assert!(
                text.contains(expected),
                "{backend:?}: the English PDF lacks {expected:?}:\n{text}"
            );
        }
        assert!(!text.contains("病理診断報告書"), "{text}");
        let (_, html) = s
            .spoke
            .raw(&format!("{english_path}/reports/1/report.html"))
            .await;
        let html = String::from_utf8(html).unwrap();
        assert!(html.contains("<html lang=\"en\">") && html.contains("Pathology Report"));
        assert!(verify(&server, &s.spoke.token, &pdf).status.success());
    }
}
