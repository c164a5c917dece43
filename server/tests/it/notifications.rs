//! Notices of case events, in the app and by e-mail, on both backends. A case is driven from
//! submission through assignment, the double-check, discordant reads, adjudication, sign-out and
//! an amendment, with people at four hospitals. Each event reaches exactly the people the next
//! step waits for (never the actor, never another hospital's people), each person marks only
//! their own notices read, and e-mails go through a real SMTP server (aiosmtpd) only to the
//! people of the hospital that turned e-mail on and gave an address, each in their own language,
//! with the case's link and nothing of the patient, the specimen or the diagnosis.

#![allow(clippy::unwrap_used)] // Test helpers: a failed step should panic with its cause.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use pathfed_core::audit::recent;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Row;

use crate::support::people::{read, wait_for};
use crate::support::{
    As, BACKENDS, Reaped, TestServer, client, submit_case, synth_slide, tools_python,
};

/// The patient and the clinical text of the case: none of it may appear in an e-mail.
const PATIENT: &str = "MRN-NOTIFY-4471";
const FIRST_FINDINGS: &str = "Tubular adenoma, low grade";
const ADJUDICATED: &str = "Well differentiated adenocarcinoma";
const AMENDMENT_REASON: &str = "Deeper levels reviewed";
/// What the case's form and reads hold (see `submit_case` and `people::read`).
const FORBIDDEN: [&str; 12] = [
    PATIENT,
    "stomach",
    "endoscopic biopsy",
    "antrum",
    "Dysplasia",
    "carcinoma",
    "GAS-G",
    "Group 4",
    "Group 5",
    FIRST_FINDINGS,
    ADJUDICATED,
    AMENDMENT_REASON,
];

const BASE_URL: &str = "https://pathfed.example.jp";
const FROM: &str = "pathfed <noreply@pathfed.example.jp>";

/// The mail server: saves each message it accepts as JSON (envelope, decoded headers, the
/// plain-text body and the raw message), renamed into place once complete.
const MAIL_SERVER: &str = r#"
import email
import email.policy
import json
import os
import sys
import uuid

from aiosmtpd.controller import Controller


class SaveEach:
    def __init__(self, folder):
        self.folder = folder

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        message = email.message_from_bytes(raw, policy=email.policy.default)
        body = message.get_body(preferencelist=("plain",))
        saved = {
            "rcpt_to": list(envelope.rcpt_tos),
            "from": str(message["From"]),
            "to": str(message["To"]),
            "subject": str(message["Subject"]),
            "message_id": str(message["Message-ID"]),
            "body": body.get_content() if body is not None else "",
            "raw": raw.decode("utf-8", "replace"),
        }
        name = uuid.uuid4().hex
        partial = os.path.join(self.folder, "." + name)
        with open(partial, "w", encoding="utf-8") as f:
            json.dump(saved, f, ensure_ascii=False)
        os.rename(partial, os.path.join(self.folder, name + ".json"))
        return "250 Message accepted for delivery"


folder, port = sys.argv[1], int(sys.argv[2])
controller = Controller(SaveEach(folder), hostname="127.0.0.1", port=port)
controller.start()
print("ready", flush=True)
# Serves until the test ends: its end closes this process's stdin (or kills it).
sys.stdin.read()
controller.stop()
"#;

/// A real SMTP server on a free loopback port, saving what it receives.
struct MailServer {
    port: u16,
    mailbox: tempfile::TempDir,
    _process: Reaped,
}

impl MailServer {
    fn start() -> Self {
        let mailbox = tempfile::tempdir().unwrap();
        let script_dir = tempfile::tempdir().unwrap();
        let script = script_dir.path().join("mail_server.py");
        std::fs::write(&script, MAIL_SERVER).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let mut child = Command::new(tools_python())
            .arg(&script)
            .arg(mailbox.path())
            .arg(port.to_string())
            // Held open by the child handle: closing it ends the server.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the test mail server (aiosmtpd; run scripts/setup.sh)");
        let stdout = child.stdout.take().unwrap();
        let process = Reaped(child);
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the test mail server did not start");
        Self {
            port,
            mailbox,
            _process: process,
        }
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received so far.
    fn mails(&self) -> Vec<Value> {
        let mut mails: Vec<Value> = std::fs::read_dir(self.mailbox.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
            .collect();
        mails.sort_by_key(|m| m["subject"].as_str().unwrap_or_default().to_string());
        mails
    }
}

/// The person called `name`.
fn person<'p, 's>(people: &'p [(&'static str, As<'s>)], name: &str) -> &'p As<'s> {
    &people.iter().find(|(n, _)| *n == name).unwrap().1
}

/// `who`'s notices.
async fn notices(who: &As<'_>) -> Value {
    who.ok(Method::GET, "/api/v1/notifications", None).await
}

/// The kinds of `who`'s notices, sorted, after checking that each names `case`.
async fn kinds(who: &As<'_>, case: &str) -> Vec<String> {
    let list = notices(who).await;
    let items = list["items"].as_array().unwrap();
    let mut kinds = Vec::new();
    for item in items {
        assert_eq!(item["case_id"], case, "{list}");
        assert_eq!(item["case_short"], &case[..8], "{list}");
        kinds.push(item["kind"].as_str().unwrap().to_string());
    }
    // Newest first.
    let times: Vec<i64> = items
        .iter()
        .map(|i| i["created_at"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{list}");
    assert!(!list.to_string().contains(PATIENT), "{list}");
    kinds.sort();
    kinds
}

/// Adds `kind` to what each of `names` should have been told.
fn tell(
    expected: &mut BTreeMap<&'static str, Vec<&'static str>>,
    names: &[&'static str],
    kind: &'static str,
) {
    for name in names {
        expected.entry(*name).or_default().push(kind);
    }
}

/// Checks that everyone has exactly the notices `expected` lists (none where it lists none).
async fn check(
    people: &[(&'static str, As<'_>)],
    expected: &BTreeMap<&'static str, Vec<&'static str>>,
    case: &str,
    step: &str,
) {
    for (name, who) in people {
        let mut want: Vec<String> = expected
            .get(name)
            .map(|kinds| kinds.iter().map(|k| k.to_string()).collect())
            .unwrap_or_default();
        want.sort();
        assert_eq!(
            kinds(who, case).await,
            want,
            "after {step}: {name}'s notices"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_event_reaches_the_right_people_in_the_app_and_by_e_mail_without_patient_data() {
    for backend in BACKENDS {
        let mail = MailServer::start();
        let smtp_url = mail.url();
        let server = TestServer::start_with(
            backend,
            &[
                ("PATHFED_NOTIFY_SMTP_URL", smtp_url.as_str()),
                ("PATHFED_NOTIFY_FROM", FROM),
                ("PATHFED_NOTIFY_BASE_URL", BASE_URL),
                // The test's mail server speaks plain SMTP on loopback; the default needs TLS.
                ("PATHFED_NOTIFY_STARTTLS", "false"),
            ],
        );
        let who = |hospital: &str, kind: &str, name: &str, role: &str| As {
            server: &server,
            token: server.user(hospital, kind, name, role),
        };
        let people: Vec<(&'static str, As<'_>)> = vec![
            ("sub_a", who("Spoke A", "spoke", "sub_a", "submitter")),
            ("adm_a", who("Spoke A", "spoke", "adm_a", "admin")),
            ("clerk_a", who("Spoke A", "spoke", "clerk_a", "submitter")),
            ("path1", who("Hub H", "hub", "path1", "pathologist")),
            ("path2", who("Hub H", "hub", "path2", "pathologist")),
            ("path3", who("Hub H", "hub", "path3", "pathologist")),
            ("adm_h", who("Hub H", "hub", "adm_h", "admin")),
            ("res_h", who("Hub H", "hub", "res_h", "researcher")),
            ("sub_b", who("Spoke B", "spoke", "sub_b", "submitter")),
            ("path_g", who("Hub G", "hub", "path_g", "pathologist")),
        ];
        server.cli_ok(&["admin", "hospital", "default-hub", "Spoke A", "Hub H"]);

        // Profiles and hospital settings through the admin commands. sub_a reads English,
        // adm_a the hospital's Japanese; clerk_a's address is cleared again, so clerk_a gets
        // notices in the app only. Hub H keeps e-mail off although path1 has an address;
        // Spoke B turns it on but is never told anything.
        let shown = server.cli_ok(&[
            "admin",
            "user",
            "profile",
            "sub_a",
            "--display-name",
            "Alice Sato",
            "--email",
            "sub_a@spoke-a.example.jp",
            "--language",
            "en",
        ]);
        assert!(shown.contains("language en"), "{shown}");
        let shown = server.cli_ok(&[
            "admin",
            "user",
            "profile",
            "adm_a",
            "--display-name",
            "山田 花子",
            "--qualification",
            "臨床検査技師",
            "--email",
            "adm_a@spoke-a.example.jp",
        ]);
        assert!(shown.contains("name 山田 花子"), "{shown}");
        assert!(shown.contains("language browser"), "{shown}");
        for (user, address) in [
            ("clerk_a", "clerk_a@spoke-a.example.jp"),
            ("path1", "path1@hub-h.example.jp"),
            ("sub_b", "sub_b@spoke-b.example.jp"),
        ] {
            server.cli_ok(&["admin", "user", "profile", user, "--email", address]);
        }
        let shown = server.cli_ok(&["admin", "user", "profile", "clerk_a", "--email", ""]);
        assert!(shown.contains("email -"), "{shown}");
        let shown = server.cli_ok(&["admin", "user", "profile", "adm_a"]);
        assert!(shown.contains("email adm_a@spoke-a.example.jp"), "{shown}");
        let shown = server.cli_ok(&[
            "admin",
            "hospital",
            "locale",
            "Spoke A",
            "--time-zone",
            "Asia/Tokyo",
            "--language",
            "ja",
        ]);
        assert!(
            shown.contains("time zone Asia/Tokyo, language ja"),
            "{shown}"
        );
        let refused = server.cli(&[
            "admin",
            "hospital",
            "locale",
            "Spoke A",
            "--time-zone",
            "Mars/Olympus",
        ]);
        assert!(!refused.status.success(), "an unknown time zone is refused");
        server.cli_ok(&["admin", "hospital", "email", "Spoke A", "on"]);
        server.cli_ok(&["admin", "hospital", "email", "Spoke B", "on"]);
        server.cli_ok(&["admin", "hospital", "email", "Hub H", "off"]);
        let db = server.db().await;
        let audit = recent(&db, 500).await.unwrap();
        for action in [
            "admin.user.profile",
            "admin.hospital.locale",
            "admin.hospital.email",
        ] {
            assert!(
                audit.iter().any(|r| r.event.action == action),
                "{action} is not audited"
            );
        }
        assert!(
            audit
                .iter()
                .filter(|r| r.event.action == "admin.user.profile")
                .all(|r| !r.event.detail.contains('@')),
            "the audit log names the fields changed, not the addresses"
        );

        // Submission: the hub's pathologists, nobody else (not the hub's admin or researcher,
        // not another hub).
        let file = synth_slide(server.dir.path(), "notify.svs", 2400, 1800, 31);
        let (case, slide) = submit_case(&server, &person(&people, "sub_a").token, &file, PATIENT);
        let path = format!("/api/v1/cases/{case}");
        let mut expected = BTreeMap::new();
        // The hub's pathologists and its admin, who assigns cases.
        tell(
            &mut expected,
            &["path1", "path2", "path3", "adm_h"],
            "case_submitted",
        );
        check(&people, &expected, &case, "submission").await;

        // The hub's admin gives it to path1.
        person(&people, "adm_h")
            .ok(
                Method::POST,
                &format!("{path}/assign"),
                Some(json!({ "username": "path1" })),
            )
            .await;
        tell(&mut expected, &["path1"], "case_assigned");
        check(&people, &expected, &case, "assignment").await;

        // The first read: the double-check waits for any other pathologist of the hub.
        person(&people, "path1")
            .ok(
                Method::PUT,
                &format!("{path}/reads/primary"),
                Some(read("GAS-G4", &slide)),
            )
            .await;
        tell(&mut expected, &["path2", "path3"], "double_check_requested");
        check(&people, &expected, &case, "the first read").await;

        // path1 gives the double-check to path2.
        person(&people, "path1")
            .ok(
                Method::POST,
                &format!("{path}/double-check"),
                Some(json!({ "username": "path2" })),
            )
            .await;
        tell(&mut expected, &["path2"], "double_check_requested");
        check(&people, &expected, &case, "the double-check request").await;

        // A discordant second read: the other reader is told (the second reader acted).
        let second = person(&people, "path2")
            .ok(
                Method::PUT,
                &format!("{path}/reads/second"),
                Some(read("GAS-G5", &slide)),
            )
            .await;
        assert_eq!(second["status"], "adjudication");
        tell(&mut expected, &["path1"], "adjudication_needed");
        check(&people, &expected, &case, "the discordant read").await;

        // Adjudication hands nothing to anyone; sign-out tells the spoke's submitters and
        // admins; the amendment tells them again, and the first reader.
        person(&people, "path1")
            .ok(
                Method::POST,
                &format!("{path}/adjudication"),
                Some(json!({
                    "code": "GAS-G5", "findings": ADJUDICATED,
                    "note": "Agreed at the multi-head microscope",
                })),
            )
            .await;
        check(&people, &expected, &case, "adjudication").await;
        person(&people, "path1")
            .ok(Method::POST, &format!("{path}/sign-out"), None)
            .await;
        tell(
            &mut expected,
            &["sub_a", "adm_a", "clerk_a"],
            "report_issued",
        );
        check(&people, &expected, &case, "sign-out").await;
        person(&people, "path2")
            .ok(
                Method::POST,
                &format!("{path}/amendments"),
                Some(json!({
                    "code": "GAS-G4", "findings": FIRST_FINDINGS, "reason": AMENDMENT_REASON,
                })),
            )
            .await;
        tell(
            &mut expected,
            &["sub_a", "adm_a", "clerk_a", "path1"],
            "report_amended",
        );
        check(&people, &expected, &case, "the amendment").await;

        // Marking read is per person: path2 reads one notice; path3's are untouched; another
        // person's notice is "not found" and stays unread.
        let path2_list = notices(person(&people, "path2")).await;
        assert_eq!(path2_list["unread"], 3, "{path2_list}");
        let first_id = path2_list["items"][0]["id"].as_str().unwrap().to_string();
        let answer = person(&people, "path2")
            .ok(
                Method::POST,
                &format!("/api/v1/notifications/{first_id}/read"),
                None,
            )
            .await;
        assert_eq!(answer["unread"], 2, "{answer}");
        // Again is fine.
        person(&people, "path2")
            .ok(
                Method::POST,
                &format!("/api/v1/notifications/{first_id}/read"),
                None,
            )
            .await;
        let path2_list = notices(person(&people, "path2")).await;
        let read_flags: Vec<(String, bool)> = path2_list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["id"].as_str().unwrap().to_string(),
                    i["read"].as_bool().unwrap(),
                )
            })
            .collect();
        assert!(
            read_flags
                .iter()
                .all(|(id, read)| *read == (*id == first_id)),
            "{path2_list}"
        );
        assert_eq!(notices(person(&people, "path3")).await["unread"], 2);
        let path1_list = notices(person(&people, "path1")).await;
        let theirs = path1_list["items"][0]["id"].as_str().unwrap().to_string();
        person(&people, "path2")
            .refused(
                Method::POST,
                &format!("/api/v1/notifications/{theirs}/read"),
                None,
                404,
            )
            .await;
        assert_eq!(
            notices(person(&people, "path1")).await["unread"],
            path1_list["unread"],
            "another person's notice stays unread"
        );
        let answer = person(&people, "sub_a")
            .ok(Method::POST, "/api/v1/notifications/read-all", None)
            .await;
        assert_eq!(answer["unread"], 0, "{answer}");
        let sub_a_list = notices(person(&people, "sub_a")).await;
        assert!(
            sub_a_list["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i["read"] == true),
            "{sub_a_list}"
        );
        assert_eq!(notices(person(&people, "adm_a")).await["unread"], 2);
        let anonymous = client()
            .get(format!("{}/api/v1/notifications", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

        // E-mail: a job per notice of Spoke A's people with an address (sub_a, adm_a; two
        // notices each), queued with the notices, carrying nothing but the notice's id.
        let jobs = sqlx::query("SELECT payload FROM jobs WHERE kind = 'notify-email'")
            .fetch_all(db.pool())
            .await
            .unwrap();
        assert_eq!(jobs.len(), 4, "one e-mail job per mailed notice");
        for job in &jobs {
            let payload: String = job.get("payload");
            let payload: Value = serde_json::from_str(&payload).unwrap();
            assert_eq!(
                payload.as_object().unwrap().keys().collect::<Vec<_>>(),
                ["notification_id"],
                "{payload}"
            );
        }
        let failures = wait_for("the e-mail jobs", Duration::from_secs(120), || {
            let db = db.clone();
            async move {
                let rows =
                    sqlx::query("SELECT status, last_error FROM jobs WHERE kind = 'notify-email'")
                        .fetch_all(db.pool())
                        .await
                        .unwrap();
                let statuses: Vec<(String, Option<String>)> = rows
                    .iter()
                    .map(|r| (r.get("status"), r.get("last_error")))
                    .collect();
                let finished = statuses
                    .iter()
                    .all(|(s, _)| s == "succeeded" || s == "failed");
                finished.then(|| {
                    statuses
                        .into_iter()
                        .filter(|(s, _)| s != "succeeded")
                        .collect::<Vec<_>>()
                })
            }
        })
        .await;
        assert!(failures.is_empty(), "{failures:?}\n{}", server.log());

        let mails = mail.mails();
        let mut by_recipient: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
        for m in &mails {
            let to = m["rcpt_to"].as_array().unwrap();
            assert_eq!(to.len(), 1, "one recipient per e-mail: {m}");
            by_recipient
                .entry(to[0].as_str().unwrap().to_string())
                .or_default()
                .push(m);
        }
        assert_eq!(
            by_recipient.keys().collect::<Vec<_>>(),
            ["adm_a@spoke-a.example.jp", "sub_a@spoke-a.example.jp"],
            "only Spoke A's people with an address are mailed"
        );
        let link = format!("{BASE_URL}/case?id={case}");
        let short = &case[..8];
        for m in &mails {
            let body = m["body"].as_str().unwrap();
            let subject = m["subject"].as_str().unwrap();
            assert_eq!(m["from"], FROM, "{m}");
            assert!(body.contains(&link), "no link to the case: {body}");
            assert!(subject.contains(short), "{subject}");
            assert!(body.contains("JST"), "times in the hospital's zone: {body}");
            assert!(
                m["message_id"].as_str().unwrap().starts_with("<notice-"),
                "{m}"
            );
            let everything = format!(
                "{subject}\n{body}\n{}\n{}",
                m["to"].as_str().unwrap_or_default(),
                m["raw"].as_str().unwrap_or_default()
            );
            for forbidden in FORBIDDEN {
                assert!(
                    !everything.contains(forbidden),
                    "an e-mail carries {forbidden:?}:\n{everything}"
                );
            }
        }
        // sub_a reads English, adm_a the hospital's Japanese.
        let subjects = |address: &str| -> Vec<String> {
            let mut s: Vec<String> = by_recipient[address]
                .iter()
                .map(|m| m["subject"].as_str().unwrap().to_string())
                .collect();
            s.sort();
            s
        };
        assert_eq!(
            subjects("sub_a@spoke-a.example.jp"),
            [
                format!("[pathfed] Pathology report amended (case {short})"),
                format!("[pathfed] Pathology report issued (case {short})"),
            ]
        );
        assert_eq!(
            subjects("adm_a@spoke-a.example.jp"),
            [
                format!("【pathfed】病理診断報告書が確定しました（症例 {short}）"),
                format!("【pathfed】病理診断報告書が訂正されました（症例 {short}）"),
            ]
        );
        for m in &by_recipient["sub_a@spoke-a.example.jp"] {
            let body = m["body"].as_str().unwrap();
            assert!(body.starts_with("Dear Alice Sato,"), "{body}");
            assert!(body.contains("Requesting hospital: Spoke A"), "{body}");
            assert!(body.contains("Consulting hospital: Hub H"), "{body}");
        }
        for m in &by_recipient["adm_a@spoke-a.example.jp"] {
            let body = m["body"].as_str().unwrap();
            assert!(body.starts_with("山田 花子 様"), "{body}");
            assert!(body.contains("依頼元施設: Spoke A"), "{body}");
            assert!(body.contains("診断施設: Hub H"), "{body}");
            assert!(body.contains("年") && body.contains("JST"), "{body}");
            assert!(m["to"].as_str().unwrap().contains("山田 花子"), "{m}");
        }
    }
}
