//! `pathfed admin ...` and `pathfed audit ...`: hospitals, users, tokens and the audit chain,
//! run on the server host against the configured database. Every change is audited.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use pathfed_core::accounts::{self, HospitalKind, Role};
use pathfed_core::audit::{self, AuditEvent, Verification};
use pathfed_core::locale::Lang;
use pathfed_core::{Config, Platform};

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create the first hospital and the platform admin, who runs the research tier and
    /// decides which models are deployed, and administers that hospital (refused once any user
    /// exists).
    Init {
        /// Hospital name.
        #[arg(long)]
        hospital: String,
        /// Hospital kind.
        #[arg(long, default_value = "hub")]
        kind: String,
        /// The platform admin's user name.
        #[arg(long)]
        user: String,
        /// File holding the password (first line).
        #[arg(long, conflicts_with = "generate_password")]
        password_file: Option<PathBuf>,
        /// Generate a password and print it.
        #[arg(long)]
        generate_password: bool,
        /// Succeed without changes when the platform already has users.
        #[arg(long)]
        if_empty: bool,
    },
    /// Manage hospitals.
    #[command(subcommand)]
    Hospital(HospitalCommand),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// HTTPS certificates: a self-signed one for trials.
    #[command(subcommand)]
    Tls(super::tls::TlsCommand),
    /// Curate every signed-out slide that has no research slide under the current pseudonym
    /// key (after a key rotation, or a sign-out whose curation was never queued).
    Recurate {
        /// Also delete research slides no signed-out slide maps to under the current key
        /// (those of an earlier key), once the new curation has finished.
        #[arg(long)]
        retire_stale: bool,
    },
    /// Back up the database, the object store and the keys (sealed with a passphrase) into a
    /// new generation of a backup folder, keeping the newest few.
    Backup(super::backup::BackupArgs),
    /// Rebuild a platform from a backup generation into the configured, empty database, object
    /// store and data folder, then check the audit log.
    Restore(super::backup::RestoreArgs),
}

#[derive(Debug, Subcommand)]
pub enum HospitalCommand {
    /// Add a hospital.
    Add {
        /// Name.
        name: String,
        /// spoke or hub.
        #[arg(long)]
        kind: String,
    },
    /// List hospitals.
    List,
    /// Set the hub a spoke's cases go to unless the submitter chooses one.
    DefaultHub {
        /// The spoke (name).
        spoke: String,
        /// The hub (name); omit with --clear to remove the default.
        hub: Option<String>,
        /// Remove the default hub.
        #[arg(long, conflicts_with = "hub")]
        clear: bool,
    },
    /// Whether a hub's pathologists see AI results only after entering their own read of a
    /// case (so the model cannot anchor their diagnosis).
    AiAfterFirstRead {
        /// The hub (name).
        hub: String,
        /// on or off.
        #[arg(value_parser = ["on", "off"])]
        setting: String,
    },
    /// Whether a hospital's patient ids distinguish letter case when its cases and opt-outs
    /// are matched (insensitive: `ab123` is `AB123`); refused while a stored id would change.
    PatientIdCase {
        /// The hospital (name).
        hospital: String,
        /// sensitive (the default) or insensitive.
        #[arg(value_parser = ["sensitive", "insensitive"])]
        setting: String,
    },
    /// What a referring hospital shows the hub pathologists reading its cases, so that they can
    /// check the patient's identity: the slide label image, the patient's id (both on unless
    /// turned off).
    ShareWithHub {
        /// The referring hospital (name).
        hospital: String,
        /// label or patient-id.
        #[arg(value_parser = ["label", "patient-id"])]
        what: String,
        /// on or off.
        #[arg(value_parser = ["on", "off"])]
        setting: String,
    },
    /// The time zone a hospital's people read times in and the language of its reports, e-mails
    /// and (unless a user chooses) pages; shows them when neither is given.
    Locale {
        /// The hospital (name).
        hospital: String,
        /// An IANA time zone, e.g. Asia/Tokyo (the default).
        #[arg(long)]
        time_zone: Option<String>,
        /// ja (the default) or en.
        #[arg(long, value_parser = ["ja", "en"])]
        language: Option<String>,
    },
    /// Whether a hospital's people get their notices by e-mail as well as in the app (off until
    /// turned on; also needs the platform's `[notify] smtp_url`).
    Email {
        /// The hospital (name).
        hospital: String,
        /// on or off.
        #[arg(value_parser = ["on", "off"])]
        setting: String,
    },
    /// A hospital's second-factor policy: whether every one of its users must sign in with a
    /// second factor (admins always must), and whether signing out a case asks for a fresh
    /// code. Shows the policy when neither is given.
    SecondFactor {
        /// The hospital (name).
        hospital: String,
        /// Every user signs in with a second factor: on or off.
        #[arg(long, value_parser = ["on", "off"])]
        require: Option<String>,
        /// Signing out a case asks for a code given within `auth.fresh_second_factor_minutes`:
        /// on or off.
        #[arg(long, value_parser = ["on", "off"])]
        sign_out: Option<String>,
    },
    /// A hospital's upload quota (the bytes of slides it may store, unfinished uploads
    /// included): shows it with the usage, or sets it.
    Quota {
        /// The hospital (name).
        hospital: String,
        /// Quota in GiB (decimals allowed, e.g. 0.5).
        #[arg(long, conflicts_with_all = ["bytes", "none"])]
        gib: Option<f64>,
        /// Quota in bytes.
        #[arg(long, conflicts_with = "none")]
        bytes: Option<i64>,
        /// No quota.
        #[arg(long)]
        none: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user.
    Add {
        /// User name.
        username: String,
        /// The user's hospital (name).
        #[arg(long)]
        hospital: String,
        /// submitter, pathologist, researcher, admin (of this hospital only) or platform-admin.
        #[arg(long)]
        role: String,
        /// File holding the password (first line).
        #[arg(long)]
        password_file: PathBuf,
    },
    /// List users.
    List,
    /// Stop a user from signing in (ends their sessions; tokens stop working).
    Disable {
        /// User name.
        username: String,
    },
    /// Let a disabled user sign in again.
    Enable {
        /// User name.
        username: String,
    },
    /// Lift the lock that repeated failed sign-ins put on a user name (it also ends by itself
    /// after `auth.lockout_minutes`).
    Unlock {
        /// User name.
        username: String,
    },
    /// Forget a user's second factor (a lost phone): its secret and recovery codes. The user
    /// sets up a new one at the next sign-in where one is required.
    ResetSecondFactor {
        /// User name.
        username: String,
    },
    /// Set a new password (it must pass the password rules; ends the user's sessions and
    /// tokens).
    Password {
        /// User name.
        username: String,
        /// File holding the password (first line).
        #[arg(long)]
        password_file: PathBuf,
    },
    /// Set how a user is named on reports and notices, where notices are mailed and the
    /// language they read; an empty value clears a field. Shows the profile when nothing is
    /// given.
    Profile {
        /// User name.
        username: String,
        /// Full name as reports print it, e.g. "山田 太郎".
        #[arg(long)]
        display_name: Option<String>,
        /// Qualification as registered, e.g. 病理専門医.
        #[arg(long)]
        qualification: Option<String>,
        /// E-mail address for notices.
        #[arg(long)]
        email: Option<String>,
        /// ja, en, or browser (follow the browser's language; e-mails use the hospital's).
        #[arg(long, value_parser = ["ja", "en", "browser"])]
        language: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token for a user and print it (shown once).
    Create {
        /// Owner.
        #[arg(long)]
        user: String,
        /// What it is for.
        #[arg(long, default_value = "cli")]
        name: String,
        /// Days until it stops working (default: the platform's `auth.token_days`, 90).
        #[arg(long)]
        expires_days: Option<u32>,
    },
    /// List tokens.
    List,
    /// Revoke a token by id.
    Revoke {
        /// Token id (from `token list`).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the keyed hash chain and its signed checkpoints; names the first row that does
    /// not fit (edited, removed, reordered, recomputed, or the newest rows removed) and exits
    /// non-zero.
    Verify,
    /// Write a signed checkpoint of the chain's head to the object store now (nothing when
    /// the log has not moved since the last one).
    Checkpoint,
    /// Print the most recent entries.
    Tail {
        /// How many.
        #[arg(short, long, default_value_t = 20)]
        n: i64,
    },
}

fn read_password(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading password file {}", path.display()))?;
    let password = text.lines().next().unwrap_or_default().to_string();
    if password.is_empty() {
        bail!("password file {} is empty", path.display());
    }
    Ok(password)
}

/// The operating-system account this process acts as: its effective uid (not `$USER`, which
/// the shell sets and anyone can change) and that uid's name in `/etc/passwd`, e.g.
/// `pathfed (uid 998)`; the uid alone when it has no name there.
fn operator() -> String {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| effective_uid(&status));
    let Some(uid) = uid else {
        return "unknown account".into();
    };
    let name = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| account_name(&passwd, uid));
    match name {
        Some(name) => format!("{name} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

/// The effective uid from `/proc/self/status` (`Uid:` real, effective, saved, filesystem).
fn effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|uid| uid.parse().ok())
}

/// The name of `uid` in a passwd file (`name:password:uid:…`).
fn account_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?.parse::<u32>().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_string())
    })
}

/// An audit event of this command, by the account it runs as.
pub(super) fn cli_event(action: &str, target: &str) -> AuditEvent {
    AuditEvent {
        actor: format!("cli:{}", operator()),
        hospital_id: String::new(),
        action: action.into(),
        target: target.into(),
        outcome: "ok".into(),
        detail: String::new(),
    }
}

async fn platform(config: &Config) -> anyhow::Result<Platform> {
    Platform::open(config.clone())
        .await
        .context("opening the platform database and store")
}

/// Runs an admin command.
pub async fn run(cmd: AdminCommand, config: &Config) -> anyhow::Result<()> {
    // Certificates need no platform: made without opening (or creating) a database.
    let cmd = match cmd {
        AdminCommand::Tls(tls) => return super::tls::run(tls),
        // Restore needs its target untouched: opening the platform would create and migrate it.
        AdminCommand::Backup(args) => return super::backup::backup(args, config).await,
        AdminCommand::Restore(args) => return super::backup::restore(args, config).await,
        other => other,
    };
    let p = platform(config).await?;
    let db = &p.db;
    match cmd {
        AdminCommand::Tls(tls) => super::tls::run(tls)?,
        AdminCommand::Backup(args) => super::backup::backup(args, config).await?,
        AdminCommand::Restore(args) => super::backup::restore(args, config).await?,
        AdminCommand::Init {
            hospital,
            kind,
            user,
            password_file,
            generate_password,
            if_empty,
        } => {
            if accounts::count_users(db).await? > 0 {
                if if_empty {
                    println!("pathfed already has users; sign in with your account");
                    return Ok(());
                }
                bail!("pathfed is already initialised; use `pathfed admin user add`");
            }
            let password = match (password_file, generate_password) {
                (Some(file), _) => read_password(&file)?,
                (None, true) => pathfed_core::secrets::new_secret("")[..20].to_string(),
                (None, false) => bail!("pass --password-file FILE or --generate-password"),
            };
            let kind: HospitalKind = kind.parse()?;
            let h = match accounts::hospital_by_name(db, &hospital).await {
                Ok(h) => h,
                Err(_) => accounts::create_hospital(db, &hospital, kind).await?,
            };
            // The operator who sets the platform up runs it: without a platform admin nobody
            // could deploy a model or reach the research tier as an operator.
            let u = accounts::create_user(db, &h, &user, Role::PlatformAdmin, &password).await?;
            // Keys that must live outside the database are made now, so a backup plan can
            // include them from day one.
            pathfed_consult::patient::PatientIds::load(config)
                .context("creating the patient-id keys")?;
            pathfed_datasets::pseudonym::Pseudonyms::load(config)
                .context("creating the research pseudonym key")?;
            pathfed_core::second_factor::ensure_key(config)
                .context("creating the second-factor key")?;
            p.audit(
                cli_event("admin.init", &format!("user:{}", u.username)).detail(h.name.clone()),
            )
            .await?;
            println!(
                "created hospital {:?} ({}) and platform admin {:?}",
                h.name,
                h.kind.as_str(),
                u.username
            );
            if generate_password {
                println!("sign in as {} with password: {password}", u.username);
            }
        }
        AdminCommand::Recurate { retire_stale } => {
            let research = pathfed_datasets::Research::new(p.clone())
                .context("loading the research pseudonym key")?;
            let done = pathfed_datasets::curate::recurate(&research, retire_stale).await?;
            p.audit(cli_event("admin.recurate", "research_tier").detail(format!(
                "enqueued {}, retired {}",
                done.enqueued,
                done.retired.len()
            )))
            .await?;
            println!(
                "signed-out slides: {} curated, {} queued now, {} already queued, {} opted out",
                done.present, done.enqueued, done.pending, done.opted_out
            );
            if retire_stale {
                println!(
                    "retired {} research slides of an earlier key",
                    done.retired.len()
                );
            }
            if done.enqueued > 0 {
                println!("the curate jobs run on `pathfed serve` or `pathfed worker`");
            }
        }
        AdminCommand::Hospital(HospitalCommand::Add { name, kind }) => {
            let h = accounts::create_hospital(db, &name, kind.parse()?).await?;
            p.audit(cli_event("admin.hospital.create", &format!("hospital:{}", h.id)).detail(name))
                .await?;
            println!("{}\t{}\t{}", h.id, h.name, h.kind.as_str());
        }
        AdminCommand::Hospital(HospitalCommand::DefaultHub { spoke, hub, clear }) => {
            if hub.is_none() && !clear {
                anyhow::bail!("name the hub, or pass --clear to remove the default");
            }
            pathfed_consult::cases::set_default_hub(db, &spoke, hub.as_deref()).await?;
            p.audit(
                cli_event("admin.hospital.default_hub", &format!("hospital:{spoke}"))
                    .detail(hub.clone().unwrap_or_else(|| "(none)".into())),
            )
            .await?;
            match hub {
                Some(hub) => println!("{spoke}: cases go to {hub} by default"),
                None => println!("{spoke}: no default hub"),
            }
        }
        AdminCommand::Hospital(HospitalCommand::AiAfterFirstRead { hub, setting }) => {
            let h = accounts::hospital_by_name(db, &hub)
                .await
                .with_context(|| format!("no hospital named {hub:?}"))?;
            if h.kind != HospitalKind::Hub {
                anyhow::bail!("{hub} is a spoke: only hubs read cases");
            }
            let on = setting == "on";
            pathfed_consult::ai::set_hidden_until_read(db, &h.id, on).await?;
            p.audit(
                cli_event(
                    "admin.hospital.ai_after_first_read",
                    &format!("hospital:{}", h.id),
                )
                .detail(setting.clone()),
            )
            .await?;
            if on {
                println!("{hub}: pathologists see AI results after entering their own read");
            } else {
                println!("{hub}: pathologists see AI results as soon as they are ready");
            }
        }
        AdminCommand::Hospital(HospitalCommand::PatientIdCase { hospital, setting }) => {
            let h = accounts::hospital_by_name(db, &hospital)
                .await
                .with_context(|| format!("no hospital named {hospital:?}"))?;
            let case = setting.parse::<pathfed_core::contracts::consent::PatientIdCase>()?;
            let ids = pathfed_consult::patient::PatientIds::load(config)
                .context("loading the patient-id keys")?;
            pathfed_consult::patient::set_id_case(db, &ids, &h.id, case).await?;
            p.audit(
                cli_event(
                    "admin.hospital.patient_id_case",
                    &format!("hospital:{}", h.id),
                )
                .detail(setting.clone()),
            )
            .await?;
            println!("{hospital}: patient ids are case-{setting} when cases and opt-outs match");
        }
        AdminCommand::Hospital(HospitalCommand::ShareWithHub {
            hospital,
            what,
            setting,
        }) => {
            use pathfed_core::hospital_settings::{self, SharedWithHub};
            let h = accounts::hospital_by_name(db, &hospital)
                .await
                .with_context(|| format!("no hospital named {hospital:?}"))?;
            let shared: SharedWithHub = what.parse()?;
            let on = setting == "on";
            hospital_settings::set_shared_with_hub(db, &h.id, shared, on).await?;
            p.audit(
                cli_event(
                    "admin.hospital.share_with_hub",
                    &format!("hospital:{}", h.id),
                )
                .detail(format!("{what} {setting}")),
            )
            .await?;
            let verb = if on { "shows" } else { "does not show" };
            let things = match shared {
                SharedWithHub::Label => "slide labels",
                SharedWithHub::PatientId => "patients' ids",
            };
            println!("{hospital} {verb} its {things} to the hub pathologists reading its cases");
        }
        AdminCommand::Hospital(HospitalCommand::Locale {
            hospital,
            time_zone,
            language,
        }) => {
            let h = accounts::hospital_by_name(db, &hospital)
                .await
                .with_context(|| format!("no hospital named {hospital:?}"))?;
            let language = language.as_deref().map(str::parse::<Lang>).transpose()?;
            let time_zone = time_zone.as_deref().map(str::trim);
            if time_zone.is_some() || language.is_some() {
                accounts::set_hospital_locale(db, &h.id, time_zone, language).await?;
                let mut changed = Vec::new();
                changed.extend(time_zone.map(|z| format!("time_zone={z}")));
                changed.extend(language.map(|l| format!("language={l}")));
                p.audit(
                    cli_event("admin.hospital.locale", &format!("hospital:{}", h.id))
                        .detail(changed.join(" ")),
                )
                .await?;
            }
            let h = accounts::hospital_by_name(db, &hospital).await?;
            println!(
                "{}: time zone {}, language {}",
                h.name, h.time_zone, h.language
            );
        }
        AdminCommand::Hospital(HospitalCommand::Email { hospital, setting }) => {
            let h = accounts::hospital_by_name(db, &hospital)
                .await
                .with_context(|| format!("no hospital named {hospital:?}"))?;
            let on = setting == "on";
            accounts::set_sends_email(db, &h.id, on).await?;
            p.audit(
                cli_event("admin.hospital.email", &format!("hospital:{}", h.id))
                    .detail(setting.clone()),
            )
            .await?;
            if !on {
                println!("{hospital}: notices are shown in the app only");
            } else if config.notify.email_configured() {
                println!("{hospital}: notices are also mailed to its people who have an address");
            } else {
                println!(
                    "{hospital}: notices will be mailed once the platform's [notify] smtp_url is \
                     set (until then, in the app only)"
                );
            }
        }
        AdminCommand::Hospital(HospitalCommand::SecondFactor {
            hospital,
            require,
            sign_out,
        }) => {
            use pathfed_core::second_factor;
            let h = accounts::hospital_by_name(db, &hospital)
                .await
                .with_context(|| format!("no hospital named {hospital:?}"))?;
            let mut policy = second_factor::policy(db, &h.id).await?;
            if require.is_some() || sign_out.is_some() {
                if let Some(require) = &require {
                    policy.require_second_factor = require == "on";
                }
                if let Some(sign_out) = &sign_out {
                    policy.signout_second_factor = sign_out == "on";
                }
                second_factor::set_policy(db, &h.id, policy).await?;
                p.audit(
                    cli_event(
                        "admin.hospital.second_factor",
                        &format!("hospital:{}", h.id),
                    )
                    .detail(format!(
                        "require={} sign_out={}",
                        on_off(policy.require_second_factor),
                        on_off(policy.signout_second_factor)
                    )),
                )
                .await?;
            }
            println!(
                "{hospital}: second factor required of every user: {}; fresh code to sign out a \
                 case: {} (admins always need one while auth.second_factor_for_admins is on)",
                on_off(policy.require_second_factor),
                on_off(policy.signout_second_factor)
            );
        }
        AdminCommand::Hospital(HospitalCommand::List) => {
            use pathfed_core::quota;
            for h in accounts::list_hospitals(db).await? {
                let limit = match quota::limit(db, &h.id).await? {
                    Some(limit) => quota::human_bytes(limit),
                    None => "no quota".into(),
                };
                let used = quota::human_bytes(quota::usage(db, &h.id).await?);
                println!(
                    "{}\t{}\t{}\t{used} used\t{limit}",
                    h.id,
                    h.name,
                    h.kind.as_str()
                );
            }
        }
        AdminCommand::Hospital(HospitalCommand::Quota {
            hospital,
            gib,
            bytes,
            none,
        }) => {
            use pathfed_core::quota;
            let h = accounts::hospital_by_name(db, &hospital)
                .await
                .with_context(|| format!("no hospital named {hospital:?}"))?;
            let new_limit = match (gib, bytes, none) {
                (Some(gib), _, _) => {
                    if !gib.is_finite() || !(0.0..=1e9).contains(&gib) {
                        bail!("--gib takes a number of GiB from 0 up, e.g. 500 or 0.5");
                    }
                    // Whole bytes: a fraction of a byte cannot be stored anyway.
                    Some(Some((gib * 1024.0 * 1024.0 * 1024.0).round() as i64))
                }
                (None, Some(bytes), _) => Some(Some(bytes)),
                (None, None, true) => Some(None),
                (None, None, false) => None,
            };
            if let Some(limit) = new_limit {
                quota::set_limit(db, &h.id, limit).await?;
                p.audit(
                    cli_event("admin.hospital.quota", &format!("hospital:{}", h.id))
                        .detail(limit.map_or_else(|| "none".to_string(), |b| format!("{b} bytes"))),
                )
                .await?;
            }
            let used = quota::usage(db, &h.id).await?;
            match quota::limit(db, &h.id).await? {
                Some(limit) => println!(
                    "{hospital}: {} used of a {} upload quota ({used} of {limit} bytes)",
                    quota::human_bytes(used),
                    quota::human_bytes(limit)
                ),
                None => println!(
                    "{hospital}: {} used ({used} bytes), no upload quota",
                    quota::human_bytes(used)
                ),
            }
        }
        AdminCommand::User(UserCommand::Add {
            username,
            hospital,
            role,
            password_file,
        }) => {
            let h = accounts::hospital_by_name(db, &hospital).await?;
            let password = read_password(&password_file)?;
            let u = accounts::create_user(db, &h, &username, role.parse()?, &password).await?;
            p.audit(cli_event("admin.user.create", &format!("user:{}", u.username)).detail(role))
                .await?;
            println!("created {} ({}) in {}", u.username, u.role.as_str(), h.name);
        }
        AdminCommand::User(UserCommand::List) => {
            for u in accounts::list_users(db).await? {
                let state = if u.disabled { "disabled" } else { "active" };
                println!(
                    "{}\t{}\t{}\t{state}",
                    u.username,
                    u.role.as_str(),
                    u.hospital.name
                );
            }
        }
        AdminCommand::User(UserCommand::Disable { username }) => {
            accounts::set_disabled(db, &username, true).await?;
            p.audit(cli_event("admin.user.disable", &format!("user:{username}")))
                .await?;
            println!("disabled {username}");
        }
        AdminCommand::User(UserCommand::Unlock { username }) => {
            let key = pathfed_core::throttle::account_key(&username);
            let was_locked =
                pathfed_core::throttle::clear(db, &key, pathfed_core::clock::now()).await?;
            p.audit(cli_event("admin.user.unlock", &format!("user:{username}")))
                .await?;
            if was_locked {
                println!("unlocked {username}");
            } else {
                println!("{username} was not locked; its count of failed sign-ins is cleared");
            }
        }
        AdminCommand::User(UserCommand::ResetSecondFactor { username }) => {
            let u = accounts::user_by_name(db, &username).await?;
            let had = u.second_factor;
            pathfed_core::second_factor::reset(db, &u.id).await?;
            p.audit(
                cli_event(
                    "admin.user.reset_second_factor",
                    &format!("user:{username}"),
                )
                .detail(if had { "reset" } else { "had none" }),
            )
            .await?;
            if had {
                println!("reset the second factor of {username}");
            } else {
                println!("{username} had no second factor; any unfinished set-up is cleared");
            }
        }
        AdminCommand::User(UserCommand::Enable { username }) => {
            accounts::set_disabled(db, &username, false).await?;
            p.audit(cli_event("admin.user.enable", &format!("user:{username}")))
                .await?;
            println!("enabled {username}");
        }
        AdminCommand::User(UserCommand::Password {
            username,
            password_file,
        }) => {
            let ended =
                accounts::set_password(db, &username, &read_password(&password_file)?).await?;
            p.audit(cli_event(
                "admin.user.password",
                &format!("user:{username}"),
            ))
            .await?;
            println!(
                "password changed for {username}; ended {} session(s) and revoked {} API token(s)",
                ended.sessions, ended.tokens
            );
        }
        AdminCommand::User(UserCommand::Profile {
            username,
            display_name,
            qualification,
            email,
            language,
        }) => {
            let u = accounts::user_by_name(db, &username).await?;
            let language = match language.as_deref() {
                None => None,
                Some("browser") => Some(None),
                Some(code) => Some(Some(code.parse::<Lang>()?)),
            };
            // The audit row names the fields changed, not the values (an address is personal).
            let mut changed: Vec<String> = [
                ("display_name", display_name.is_some()),
                ("qualification", qualification.is_some()),
                ("email", email.is_some()),
            ]
            .into_iter()
            .filter(|(_, given)| *given)
            .map(|(field, _)| field.to_string())
            .collect();
            if let Some(l) = language {
                changed.push(format!(
                    "language={}",
                    l.map(Lang::as_str).unwrap_or("browser")
                ));
            }
            if !changed.is_empty() {
                let change = accounts::ProfileChange {
                    display_name,
                    qualification,
                    email,
                    language,
                };
                accounts::set_profile(db, &u.id, &change).await?;
                p.audit(
                    cli_event("admin.user.profile", &format!("user:{}", u.username))
                        .detail(changed.join(" ")),
                )
                .await?;
            }
            let u = accounts::user_by_name(db, &username).await?;
            let shown = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
            println!(
                "{}\tname {}\tqualification {}\temail {}\tlanguage {}",
                u.username,
                shown(&u.display_name),
                shown(&u.qualification),
                shown(&u.email),
                u.language.map(Lang::as_str).unwrap_or("browser"),
            );
        }
        AdminCommand::Token(TokenCommand::Create {
            user,
            name,
            expires_days,
        }) => {
            let u = accounts::user_by_name(db, &user).await?;
            let days = expires_days.unwrap_or(p.config.auth.token_days);
            let (info, secret) = accounts::create_token(db, &u, &name, days).await?;
            p.audit(cli_event("admin.token.create", &format!("token:{}", info.id)).detail(user))
                .await?;
            eprintln!(
                "token {} for {}, valid {days} days (store it now; it is not shown again):",
                info.id, u.username
            );
            println!("{secret}");
        }
        AdminCommand::Token(TokenCommand::List) => {
            for t in accounts::list_tokens(db).await? {
                let now = pathfed_core::clock::now();
                let state = if t.revoked_at.is_some() {
                    "revoked"
                } else if t.expires_at.is_some_and(|at| at <= now) {
                    "expired"
                } else {
                    "active"
                };
                println!("{}\t{}\t{}\t{state}", t.id, t.username, t.name);
            }
        }
        AdminCommand::Token(TokenCommand::Revoke { id }) => {
            accounts::revoke_token(db, &id).await?;
            p.audit(cli_event("admin.token.revoke", &format!("token:{id}")))
                .await?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

/// Runs an audit command.
pub async fn run_audit(cmd: AuditCommand, config: &Config) -> anyhow::Result<()> {
    let p = platform(config).await?;
    match cmd {
        AuditCommand::Verify => {
            let verification = p.verify_audit().await?;
            let Verification {
                rows,
                checkpoints,
                problem,
            } = verification;
            if let Some(broken) = problem {
                bail!("{broken} ({rows} rows walked, {checkpoints} checkpoint(s) found)");
            }
            println!("audit log intact: {rows} rows, {checkpoints} checkpoint(s) match");
            if checkpoints == 0 {
                println!(
                    "no checkpoint yet: the removal of the newest rows cannot be detected until \
                     one is written (`pathfed audit checkpoint`, or a running server)"
                );
            }
            Ok(())
        }
        AuditCommand::Checkpoint => {
            match pathfed_core::audit_checkpoint::write(&p).await? {
                Some(written) => println!(
                    "checkpoint of row {} ({} rows) written to {}",
                    written.checkpoint.seq, written.checkpoint.rows, written.key
                ),
                None => println!("no new rows since the last checkpoint; nothing written"),
            }
            Ok(())
        }
        AuditCommand::Tail { n } => {
            for r in audit::recent(&p.db, n).await? {
                let e = &r.event;
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    r.seq, r.at, e.actor, e.action, e.target, e.outcome, e.detail, r.address
                );
            }
            Ok(())
        }
    }
}

/// How a flag reads on the command line.
fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

#[cfg(test)]
mod tests {
    use super::{account_name, effective_uid};

    #[test]
    fn the_operator_is_the_effective_account() {
        let status = "Name:\tpathfed\nUid:\t1000\t998\t998\t998\nGid:\t998\t998\t998\t998\n";
        assert_eq!(effective_uid(status), Some(998));
        let passwd =
            "root:x:0:0:root:/root:/bin/bash\npathfed:x:998:998::/var/lib/pathfed:/bin/false\n";
        assert_eq!(account_name(passwd, 998).as_deref(), Some("pathfed"));
        assert_eq!(account_name(passwd, 0).as_deref(), Some("root"));
        assert_eq!(account_name(passwd, 1000), None);
    }
}
