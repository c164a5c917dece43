//! The signed report as HTML (for the browser) and PDF (for the spoke's records), both drawn
//! from the same [`ReportContent`] in the reading hospital's language and time zone, and both
//! showing its SHA-256.
//!
//! The PDF is PDF/A-2b, for archiving, and embeds IPAexGothic (IPA Font License v1.0), which
//! covers Japanese (JIS X 0208 and more) and Latin text; only the glyphs used are embedded.
//! `build.rs` finds the font when the crate is built. A character the font lacks prints as its
//! compatibility form where that exists (µ as μ), else as 〓, the customary mark for a missing
//! character; the HTML and the hashed content keep the text as entered.

use krilla::color::rgb;
use krilla::configure::{Archival, ConfigurationBuilder};
use krilla::geom::{PathBuilder, Point};
use krilla::metadata::{DateTime, Metadata};
use krilla::num::NormalizedF32;
use krilla::page::PageSettings;
use krilla::paint::{Fill, FillRule, Stroke};
use krilla::text::{Font, TextDirection};
use krilla::{Data, Document, SerializeSettings};
use maud::{DOCTYPE, Markup, html};
use pathfed_core::locale::{Lang, local_date, local_time};
use unicode_normalization::UnicodeNormalization;

use crate::report_content::{ReportContent, ReportPerson, ReportRead};

/// The marker `pathfed case report --verify` looks for in a PDF's keywords.
pub const PDF_MARKER: &str = "pathfed-report";

/// The embedded font (IPAexGothic), copied into the build by `build.rs`.
static FONT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/report-font.ttf"));

/// Where the web server serves [`report_font`], so the HTML report prints with the PDF's font.
pub const REPORT_FONT_PATH: &str = "/fonts/report.ttf";

/// The report font's file (TrueType), for the HTML report's `@font-face`.
pub fn report_font() -> &'static [u8] {
    FONT
}

/// The keywords line naming the report: case, version and content hash.
pub fn pdf_keywords(content: &ReportContent, content_hash: &str) -> String {
    format!(
        "{PDF_MARKER} case={} version={} content-sha256={content_hash}",
        content.case_id, content.version
    )
}

/// Why a report could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The embedded font could not be read.
    #[error("the report font cannot be read: {0}")]
    Font(String),
    /// The PDF could not be written (or would not be valid PDF/A).
    #[error("the report PDF cannot be written: {0}")]
    Pdf(String),
}

/// Every fixed word of the report in one language. Each language is one constant of this
/// type, so a word missing from either does not compile.
struct Labels {
    title: &'static str,
    amended: &'static str,
    preview: &'static str,
    preview_note: &'static str,
    case_id: &'static str,
    version: fn(i64) -> String,
    referring: &'static str,
    diagnosing: &'static str,
    patient_id: &'static str,
    age_sex: &'static str,
    organ: &'static str,
    specimen: &'static str,
    clinical: &'static str,
    urgency: &'static str,
    routine: &'static str,
    urgent: &'static str,
    received: &'static str,
    diagnosed: &'static str,
    female: &'static str,
    male: &'static str,
    other: &'static str,
    unknown: &'static str,
    /// An age band (`60-69`, `90+`) in words; `None` for one it does not know.
    age: fn(&str) -> Option<String>,
    diagnosis: &'static str,
    findings: &'static str,
    comments: &'static str,
    concordant: &'static str,
    discordant: &'static str,
    note: &'static str,
    amendment_reason: &'static str,
    supersedes: &'static str,
    slides: &'static str,
    slide_label: &'static str,
    slide_file: &'static str,
    slide_size: &'static str,
    slide_mpp: &'static str,
    reads: &'static str,
    read_primary: &'static str,
    read_second: &'static str,
    pathologists: &'static str,
    primary_reader: &'static str,
    second_reader: &'static str,
    decided_by: &'static str,
    signed_by: &'static str,
    hash: &'static str,
    hash_pending: &'static str,
    page: fn(usize, usize) -> String,
    /// Around a qualification or a code: `（…）` in Japanese, ` (…)` in English.
    open: &'static str,
    close: &'static str,
    /// Between a label and its value in running text.
    colon: &'static str,
    /// Between age band and sex.
    separator: &'static str,
    /// Between items on one line.
    gap: &'static str,
    /// Where there is nothing to say.
    none: &'static str,
}

fn ja_version(version: i64) -> String {
    format!("第{version}版")
}

fn ja_age(band: &str) -> Option<String> {
    match band.split_once('-') {
        Some((from, to)) => Some(format!("{from}～{to}歳")),
        None => band.strip_suffix('+').map(|from| format!("{from}歳以上")),
    }
}

fn ja_page(page: usize, pages: usize) -> String {
    format!("{page}/{pages}ページ")
}

fn en_version(version: i64) -> String {
    format!("Version {version}")
}

fn en_age(band: &str) -> Option<String> {
    match band.split_once('-') {
        Some((from, to)) => Some(format!("{from}-{to} years")),
        None => band
            .strip_suffix('+')
            .map(|from| format!("{from} years or older")),
    }
}

fn en_page(page: usize, pages: usize) -> String {
    format!("Page {page} of {pages}")
}

const JA: Labels = Labels {
    title: "病理診断報告書",
    amended: "訂正報告",
    preview: "プレビュー（未確定）",
    preview_note: "報告書確定前の確認用の表示です。報告書として発行されたものではありません。",
    case_id: "症例ID",
    version: ja_version,
    referring: "依頼元",
    diagnosing: "診断施設",
    patient_id: "患者ID",
    age_sex: "年齢・性別",
    organ: "臓器",
    specimen: "検体・標本",
    clinical: "臨床情報",
    urgency: "緊急度",
    routine: "通常",
    urgent: "至急",
    received: "受付日",
    diagnosed: "診断日",
    female: "女性",
    male: "男性",
    other: "その他",
    unknown: "不明",
    age: ja_age,
    diagnosis: "病理診断",
    findings: "所見",
    comments: "コメント",
    concordant: "再検（ダブルチェック）の結果は一次診断と一致しました。",
    discordant: "一次診断と再検（ダブルチェック）の結果が一致しなかったため、\
                 両診断医の協議により最終診断を決定しました。",
    note: "協議内容",
    amendment_reason: "訂正理由",
    supersedes: "訂正前の報告書（SHA-256）",
    slides: "標本一覧",
    slide_label: "ラベル",
    slide_file: "ファイル名",
    slide_size: "画像サイズ（px）",
    slide_mpp: "解像度（μm/px）",
    reads: "診断の経過",
    read_primary: "一次診断",
    read_second: "再検（ダブルチェック）",
    pathologists: "担当病理医",
    primary_reader: "診断医",
    second_reader: "ダブルチェック",
    decided_by: "最終判定",
    signed_by: "報告書確定",
    hash: "報告書ハッシュ（SHA-256）",
    hash_pending: "報告書確定時に付与されます",
    page: ja_page,
    open: "（",
    close: "）",
    colon: "：",
    separator: "・",
    gap: "　",
    none: "—",
};

const EN: Labels = Labels {
    title: "Pathology Report",
    amended: "Amended report",
    preview: "PREVIEW (not issued)",
    preview_note: "This preview is for checking before sign-out. It is not an issued report.",
    case_id: "Case ID",
    version: en_version,
    referring: "Referring hospital",
    diagnosing: "Diagnosing hospital",
    patient_id: "Patient ID",
    age_sex: "Age / sex",
    organ: "Organ",
    specimen: "Specimen",
    clinical: "Clinical information",
    urgency: "Urgency",
    routine: "Routine",
    urgent: "Urgent",
    received: "Received",
    diagnosed: "Date of diagnosis",
    female: "Female",
    male: "Male",
    other: "Other",
    unknown: "Unknown",
    age: en_age,
    diagnosis: "Pathological diagnosis",
    findings: "Findings",
    comments: "Comments",
    concordant: "The double-check agreed with the first read.",
    discordant: "The first read and the double-check disagreed; both pathologists agreed the \
                 final diagnosis.",
    note: "Adjudication note",
    amendment_reason: "Reason for amendment",
    supersedes: "Supersedes the report with SHA-256",
    slides: "Slides",
    slide_label: "Label",
    slide_file: "File name",
    slide_size: "Size (px)",
    slide_mpp: "Resolution (μm/px)",
    reads: "Reads",
    read_primary: "First read",
    read_second: "Double-check read",
    pathologists: "Pathologists",
    primary_reader: "Pathologist",
    second_reader: "Double-check",
    decided_by: "Final decision",
    signed_by: "Report issued by",
    hash: "Report SHA-256",
    hash_pending: "assigned when the report is issued",
    page: en_page,
    open: " (",
    close: ")",
    colon: ": ",
    separator: " / ",
    gap: "   ",
    none: "—",
};

fn labels(lang: Lang) -> &'static Labels {
    match lang {
        Lang::Ja => &JA,
        Lang::En => &EN,
    }
}

/// The report's words for its stored values, shared by the HTML and the PDF.
struct Words<'a> {
    l: &'static Labels,
    content: &'a ReportContent,
}

impl<'a> Words<'a> {
    fn new(content: &'a ReportContent) -> Self {
        Self {
            l: labels(content.language),
            content,
        }
    }

    fn version(&self) -> String {
        (self.l.version)(self.content.version)
    }

    fn title(&self) -> String {
        if self.amended() {
            format!(
                "{}{}{}{}",
                self.l.title, self.l.open, self.l.amended, self.l.close
            )
        } else {
            self.l.title.to_string()
        }
    }

    fn amended(&self) -> bool {
        self.content.supersedes_hash.is_some() || self.content.amendment_reason.is_some()
    }

    fn date(&self, unix: i64) -> String {
        local_date(unix, &self.content.time_zone, self.content.language)
    }

    fn time(&self, unix: i64) -> String {
        local_time(unix, &self.content.time_zone, self.content.language)
    }

    fn age_sex(&self) -> String {
        let age = match self.content.age_band.as_str() {
            "unknown" | "" => self.l.unknown.to_string(),
            band => (self.l.age)(band).unwrap_or_else(|| band.to_string()),
        };
        let sex = match self.content.sex.as_str() {
            "female" => self.l.female,
            "male" => self.l.male,
            "other" => self.l.other,
            _ => self.l.unknown,
        };
        format!("{age}{}{sex}", self.l.separator)
    }

    fn urgency(&self) -> &'static str {
        if self.content.urgency == "urgent" {
            self.l.urgent
        } else {
            self.l.routine
        }
    }

    /// `山田 太郎（病理専門医）` / `Taro Yamada (board-certified pathologist)`.
    fn person(&self, person: &ReportPerson) -> String {
        match person.qualification.as_deref().filter(|q| !q.is_empty()) {
            Some(q) => format!("{}{}{q}{}", person.name, self.l.open, self.l.close),
            None => person.name.clone(),
        }
    }

    /// A diagnosis label with its code: `Group 5（癌）（GAS-G5）`.
    fn coded(&self, label: &str, code: &str) -> String {
        if label == code {
            code.to_string()
        } else {
            format!("{label}{}{code}{}", self.l.open, self.l.close)
        }
    }

    /// A slide as people name it: its label and file name, or the file name alone.
    fn slide(&self, id: &str) -> String {
        match self.content.slide(id) {
            Some(slide) => match slide.label.as_deref().filter(|l| !l.is_empty()) {
                Some(label) => format!("{label}{}{}{}", self.l.open, slide.filename, self.l.close),
                None => slide.filename.clone(),
            },
            None => id.to_string(),
        }
    }

    fn read_kind(&self, read: &ReportRead) -> &'static str {
        match read.kind {
            crate::reads::ReadKind::Primary => self.l.read_primary,
            crate::reads::ReadKind::Second => self.l.read_second,
        }
    }

    /// `label: finding` lines for one read's per-slide diagnoses.
    fn slide_reads(&self, read: &ReportRead) -> Vec<String> {
        read.slides
            .iter()
            .map(|s| {
                let mut line = format!("{}{}", self.slide(&s.slide_id), self.l.colon);
                match (&s.label, &s.code) {
                    (Some(label), Some(code)) => line.push_str(&self.coded(label, code)),
                    _ => line.push_str(self.l.none),
                }
                if !s.findings.is_empty() {
                    line.push_str(self.l.gap);
                    line.push_str(&s.findings);
                }
                line
            })
            .collect()
    }

    fn mpp(&self, mpp: Option<f64>) -> String {
        mpp.map(|m| format!("{m:.3}"))
            .unwrap_or_else(|| self.l.unknown.to_string())
    }

    /// The comments: how the diagnosis was reached, and why this version replaces another.
    fn comments(&self) -> Vec<String> {
        let c = self.content;
        let mut lines = Vec::new();
        if c.concordant {
            lines.push(self.l.concordant.to_string());
        } else {
            lines.push(self.l.discordant.to_string());
            if !c.final_diagnosis.note.is_empty() {
                lines.push(format!(
                    "{}{}{}",
                    self.l.note, self.l.colon, c.final_diagnosis.note
                ));
            }
        }
        if let Some(reason) = &c.amendment_reason {
            lines.push(format!(
                "{}{}{reason}",
                self.l.amendment_reason, self.l.colon
            ));
        }
        if let Some(previous) = &c.supersedes_hash {
            lines.push(format!("{}{}{previous}", self.l.supersedes, self.l.colon));
        }
        lines
    }

    /// (role, person) rows of the pathologists' block; the issuing row carries the time.
    fn pathologists(&self) -> Vec<(&'static str, String)> {
        let c = self.content;
        let mut rows = Vec::new();
        if let Some(read) = c.primary_read() {
            rows.push((self.l.primary_reader, self.person(&read.reader)));
        }
        if let Some(read) = c.second_read() {
            rows.push((self.l.second_reader, self.person(&read.reader)));
        }
        if let Some(decided) = &c.final_diagnosis.decided_by {
            rows.push((self.l.decided_by, self.person(decided)));
        }
        rows.push((
            self.l.signed_by,
            format!(
                "{}{}{}",
                self.person(&c.signed_by),
                self.l.gap,
                self.time(c.signed_at)
            ),
        ));
        rows
    }

    /// (label, value) rows of the case block.
    fn fields(&self) -> Vec<(&'static str, String)> {
        let c = self.content;
        vec![
            (self.l.referring, c.spoke.clone()),
            (self.l.diagnosing, c.hub.clone()),
            (self.l.patient_id, c.patient_id.clone()),
            (self.l.age_sex, self.age_sex()),
            (self.l.organ, c.organ.clone()),
            (self.l.specimen, c.specimen.clone()),
            (self.l.clinical, c.clinical_question.clone()),
            (self.l.urgency, self.urgency().to_string()),
            (self.l.received, self.date(c.submitted_at)),
            (self.l.diagnosed, self.date(c.signed_at)),
        ]
    }
}

/// The report as a standalone HTML page, as issued.
pub fn html(content: &ReportContent, content_hash: &str) -> String {
    page(content, Some(content_hash))
}

/// The report as it would be issued now, marked as a preview; it has no hash yet (the hash
/// covers the moment of sign-out).
pub fn preview_html(content: &ReportContent) -> String {
    page(content, None)
}

fn page(content: &ReportContent, content_hash: Option<&str>) -> String {
    let w = Words::new(content);
    let l = w.l;
    let version = w.version();
    let title = w.title();
    let final_dx = &content.final_diagnosis;
    let findings = if final_dx.findings.is_empty() {
        l.none
    } else {
        final_dx.findings.as_str()
    };
    let page: Markup = html! {
        (DOCTYPE)
        html lang=(content.language.as_str()) {
            head {
                meta charset="utf-8";
                title { (title) " " (content.case_id) " " (version) }
                style { (CSS) }
            }
            body {
                @if content_hash.is_none() {
                    p.preview { strong { (l.preview) } " " (l.preview_note) }
                }
                p.meta { (l.case_id) (l.colon) code { (content.case_id) } (l.gap) (version) }
                h1 {
                    (l.title)
                    @if w.amended() { span.amended { (l.open) (l.amended) (l.close) } }
                }
                table.fields {
                    @for (label, value) in w.fields() {
                        tr { th { (label) } td.text { (value) } }
                    }
                }
                h2 { (l.diagnosis) }
                p.final { (w.coded(&final_dx.label, &final_dx.code)) }
                h2 { (l.findings) }
                p.text { (findings) }
                h2 { (l.comments) }
                @for line in w.comments() {
                    p.text { (line) }
                }
                h2 { (l.slides) }
                table.slides {
                    tr {
                        th { (l.slide_label) } th { (l.slide_file) } th { (l.slide_size) }
                        th { (l.slide_mpp) }
                    }
                    @for slide in &content.slides {
                        tr {
                            td { (slide.label.as_deref().unwrap_or(l.none)) }
                            td { (slide.filename) }
                            td { (slide.width) " × " (slide.height) }
                            td { (w.mpp(slide.mpp)) }
                        }
                    }
                }
                h2 { (l.reads) }
                @for read in &content.reads {
                    h3 {
                        (w.read_kind(read)) (l.gap) (w.person(&read.reader)) (l.gap)
                        (w.time(read.entered_at))
                    }
                    p { strong { (w.coded(&read.label, &read.code)) } }
                    @if !read.findings.is_empty() { p.text { (read.findings) } }
                    @for line in w.slide_reads(read) {
                        p.slide { (line) }
                    }
                }
                h2 { (l.pathologists) }
                table.fields {
                    @for (role, person) in w.pathologists() {
                        tr { th { (role) } td { (person) } }
                    }
                }
                p.hash {
                    (l.hash) (l.colon)
                    @match content_hash {
                        Some(hash) => { code { (hash) } }
                        None => { (l.hash_pending) }
                    }
                }
            }
        }
    };
    page.into_string()
}

// The PDF's own font first, served by the platform, so the HTML reads the same on every machine;
// the system's Japanese fonts only while it loads or where it is blocked.
const CSS: &str = "@font-face{font-family:'pathfed report';src:url(/fonts/report.ttf) format('truetype');font-display:swap}\
body{font:15px/1.6 'pathfed report','Hiragino Sans','Yu Gothic',system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#1d2430}\
h1{font-size:1.6rem;text-align:center;letter-spacing:.1em}h1 .amended{color:#a40000}\
h2{font-size:1.1rem;border-bottom:1px solid #ccd;margin-top:1.6rem}h3{font-size:1rem;margin-bottom:.2rem}\
table{border-collapse:collapse}th,td{text-align:left;padding:.2rem .8rem .2rem 0;vertical-align:top}\
table.fields th{white-space:nowrap;color:#445}table.slides th{border-bottom:1px solid #ccd}\
.text{white-space:pre-wrap}.meta{color:#556;text-align:right}.final{font-size:1.15rem;font-weight:bold}\
.preview{background:#fff4d6;border:1px solid #d9a400;padding:.5rem;color:#6b4b00}\
.hash code{font-size:.8rem;word-break:break-all}@media print{body{margin:0;max-width:none}}";

/// The embedded font's metrics: which characters it prints and how wide they are, for
/// wrapping lines and for replacing what it cannot print.
struct Metrics {
    face: ttf_parser::Face<'static>,
    units_per_em: f32,
}

/// Printed in place of a character the font lacks (the customary "geta" mark).
const MISSING: char = '〓';

impl Metrics {
    fn new() -> Result<Self, RenderError> {
        let face =
            ttf_parser::Face::parse(FONT, 0).map_err(|e| RenderError::Font(e.to_string()))?;
        let units_per_em = f32::from(face.units_per_em().max(1));
        Ok(Self { face, units_per_em })
    }

    fn has(&self, c: char) -> bool {
        self.face.glyph_index(c).is_some_and(|g| g.0 != 0)
    }

    fn advance(&self, c: char, size: f32) -> f32 {
        self.face
            .glyph_index(c)
            .and_then(|g| self.face.glyph_hor_advance(g))
            .map_or(0.0, |a| f32::from(a) * size / self.units_per_em)
    }

    fn width(&self, text: &str, size: f32) -> f32 {
        text.chars().map(|c| self.advance(c, size)).sum()
    }

    /// One line of text as the font can print it, composed (NFC): tabs become spaces, invisible formatting
    /// characters and controls go, and a character the font lacks becomes its compatibility
    /// form or [`MISSING`]. PDF/A forbids the font's "no glyph" box, so nothing reaches the
    /// PDF without a glyph.
    fn printable(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        // Composed first: a file name from a Mac arrives decomposed (か + ゛), which would
        // print as two glyphs and read back differently.
        for c in text.nfc() {
            if c == '\t' {
                out.push(' ');
            } else if c.is_control() || is_invisible(c) {
                continue;
            } else if self.has(c) {
                out.push(c);
            } else {
                let compatible: String = c.to_string().nfkc().collect();
                if !compatible.is_empty()
                    && compatible != c.to_string()
                    && compatible.chars().all(|d| self.has(d))
                {
                    out.push_str(&compatible);
                } else if self.has(MISSING) {
                    out.push(MISSING);
                } else {
                    out.push('?');
                }
            }
        }
        out
    }
}

/// Zero-width and variation characters: they change nothing a reader sees in this font.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{E0100}'..='\u{E01EF}'
    )
}

/// Chinese characters, kana, CJK punctuation and full-width forms: a line may break between
/// any two of them, where Latin text breaks only at spaces.
fn is_cjk(c: char) -> bool {
    matches!(
        c,
        '\u{2460}'..='\u{24FF}'
            | '\u{2E80}'..='\u{2FDF}'
            | '\u{3000}'..='\u{33FF}'
            | '\u{3400}'..='\u{4DBF}'
            | '\u{4E00}'..='\u{9FFF}'
            | '\u{F900}'..='\u{FAFF}'
            | '\u{FE30}'..='\u{FE4F}'
            | '\u{FF00}'..='\u{FFEF}'
            | '\u{20000}'..='\u{3FFFF}'
    )
}

/// Characters that must not begin a line (行頭禁則): closing brackets, stops, small kana,
/// the prolonged sound mark and iteration marks.
fn no_line_start(c: char) -> bool {
    matches!(
        c,
        '、' | '。'
            | '，'
            | '．'
            | '）'
            | '］'
            | '｝'
            | '〕'
            | '〉'
            | '》'
            | '」'
            | '』'
            | '】'
            | '〙'
            | '〗'
            | '〟'
            | '’'
            | '”'
            | '｠'
            | '»'
            | 'ゝ'
            | 'ゞ'
            | 'ー'
            | '々'
            | '〻'
            | '‐'
            | '゠'
            | '–'
            | '〜'
            | '～'
            | '？'
            | '！'
            | '・'
            | '：'
            | '；'
            | 'ぁ'
            | 'ぃ'
            | 'ぅ'
            | 'ぇ'
            | 'ぉ'
            | 'っ'
            | 'ゃ'
            | 'ゅ'
            | 'ょ'
            | 'ゎ'
            | 'ゕ'
            | 'ゖ'
            | 'ァ'
            | 'ィ'
            | 'ゥ'
            | 'ェ'
            | 'ォ'
            | 'ッ'
            | 'ャ'
            | 'ュ'
            | 'ョ'
            | 'ヮ'
            | 'ヵ'
            | 'ヶ'
            | ')'
            | ']'
            | '}'
            | ','
            | '.'
            | ':'
            | ';'
            | '!'
            | '?'
            | '%'
    )
}

/// Characters that must not end a line (行末禁則): opening brackets.
fn no_line_end(c: char) -> bool {
    matches!(
        c,
        '（' | '［'
            | '｛'
            | '〔'
            | '〈'
            | '《'
            | '「'
            | '『'
            | '【'
            | '〘'
            | '〖'
            | '〝'
            | '‘'
            | '“'
            | '｟'
            | '«'
            | '('
            | '['
            | '{'
    )
}

/// A piece of a line that is never split unless it alone is wider than the line: a Latin
/// word, or one CJK character with the punctuation that must stay with it.
#[derive(Debug)]
struct Segment {
    text: String,
    space_before: bool,
}

fn segments(paragraph: &str) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    let mut space = false;
    let mut in_word = false;
    for c in paragraph.chars() {
        // The ideographic space is a visible character of Japanese text, kept as written.
        if c.is_whitespace() && c != '\u{3000}' {
            space = true;
            in_word = false;
            continue;
        }
        let joins = !space
            && out.last().is_some_and(|last| {
                no_line_start(c)
                    || last.text.chars().last().is_some_and(no_line_end)
                    || (in_word && !is_cjk(c))
            });
        if joins {
            if let Some(last) = out.last_mut() {
                last.text.push(c);
            }
        } else {
            out.push(Segment {
                text: c.to_string(),
                space_before: space,
            });
        }
        in_word = !is_cjk(c);
        space = false;
    }
    out
}

impl Metrics {
    /// Splits printable text into lines no wider than `width` points at `size`, keeping its
    /// own line breaks: Latin text breaks at spaces, Japanese between characters (never before
    /// a closing bracket or stop, never after an opening bracket), and anything longer than a
    /// line is cut.
    fn wrap(&self, text: &str, size: f32, width: f32) -> Vec<String> {
        let mut lines = Vec::new();
        for paragraph in text.split('\n') {
            let mut line = String::new();
            for segment in segments(paragraph) {
                let joined = if line.is_empty() {
                    segment.text.clone()
                } else if segment.space_before {
                    format!("{line} {}", segment.text)
                } else {
                    format!("{line}{}", segment.text)
                };
                if self.width(&joined, size) <= width {
                    line = joined;
                    continue;
                }
                if !line.is_empty() {
                    lines.push(std::mem::take(&mut line));
                }
                let mut rest = segment.text;
                while self.width(&rest, size) > width {
                    let (head, tail) = self.cut(&rest, size, width);
                    lines.push(head);
                    rest = tail;
                }
                line = rest;
            }
            lines.push(line);
        }
        lines
    }

    /// The longest head of `text` that fits (at least one character), and the rest.
    fn cut(&self, text: &str, size: f32, width: f32) -> (String, String) {
        let mut used = 0.0;
        for (at, c) in text.char_indices() {
            let advance = self.advance(c, size);
            if at > 0 && used + advance > width {
                return (text[..at].to_string(), text[at..].to_string());
            }
            used += advance;
        }
        (text.to_string(), String::new())
    }
}

const PAGE_WIDTH: f32 = 595.0;
const PAGE_HEIGHT: f32 = 842.0;
const MARGIN: f32 = 50.0;
const CONTENT_WIDTH: f32 = PAGE_WIDTH - 2.0 * MARGIN;
/// Where body text stops; the footer lives below.
const BODY_BOTTOM: f32 = PAGE_HEIGHT - 72.0;
const LABEL_WIDTH: f32 = 110.0;
const LABEL_GAP: f32 = 10.0;
/// The font's ascent as a share of the size: from a line's top to its baseline.
const ASCENT: f32 = 0.88;
const LEADING: f32 = 1.5;

const BODY: f32 = 10.0;
const SMALL: f32 = 8.0;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ink {
    Black,
    Grey,
    Red,
}

/// One thing drawn on a page, in points from the page's top-left corner (`y` is a baseline).
#[derive(Debug)]
enum Op {
    Text {
        x: f32,
        y: f32,
        size: f32,
        text: String,
        ink: Ink,
    },
    Rule {
        x1: f32,
        x2: f32,
        y: f32,
        width: f32,
    },
}

/// Lays text out top to bottom over as many A4 pages as it needs.
struct Layout<'m> {
    metrics: &'m Metrics,
    pages: Vec<Vec<Op>>,
    /// Top of the next line.
    y: f32,
}

impl<'m> Layout<'m> {
    fn new(metrics: &'m Metrics) -> Self {
        Self {
            metrics,
            pages: vec![Vec::new()],
            y: MARGIN,
        }
    }

    fn new_page(&mut self) {
        self.pages.push(Vec::new());
        self.y = MARGIN;
    }

    /// Starts a new page unless `height` more points fit on this one.
    fn ensure(&mut self, height: f32) {
        if self.y + height > BODY_BOTTOM {
            self.new_page();
        }
    }

    fn draw(&mut self, x: f32, baseline: f32, size: f32, text: String, ink: Ink) {
        if text.is_empty() {
            return;
        }
        if let Some(page) = self.pages.last_mut() {
            page.push(Op::Text {
                x,
                y: baseline,
                size,
                text,
                ink,
            });
        }
    }

    fn gap(&mut self, points: f32) {
        self.y += points;
    }

    fn rule(&mut self, width: f32) {
        let y = self.y;
        if let Some(page) = self.pages.last_mut() {
            page.push(Op::Rule {
                x1: MARGIN,
                x2: PAGE_WIDTH - MARGIN,
                y,
                width,
            });
        }
    }

    /// Wrapped text in a column starting `indent` points in.
    fn paragraph(&mut self, text: &str, size: f32, indent: f32, ink: Ink) {
        self.row(&[(indent, CONTENT_WIDTH - indent, text)], size, ink);
    }

    /// One line, placed by `align` (the share of the free width left of it: 0 left, 0.5
    /// centred, 1 right).
    fn aligned(&mut self, text: &str, size: f32, align: f32, ink: Ink) {
        let text = self.metrics.printable(text);
        let leading = size * LEADING;
        self.ensure(leading);
        let free = (CONTENT_WIDTH - self.metrics.width(&text, size)).max(0.0);
        let x = MARGIN + free * align;
        let baseline = self.y + size * ASCENT;
        self.draw(x, baseline, size, text, ink);
        self.y += leading;
    }

    /// Cells side by side, each `(offset, width, text)` wrapped in its own column; the row is
    /// as tall as its tallest cell and may continue on the next page.
    fn row(&mut self, cells: &[(f32, f32, &str)], size: f32, ink: Ink) {
        let wrapped: Vec<(f32, Vec<String>)> = cells
            .iter()
            .map(|(offset, width, text)| {
                let text = self.metrics.printable_lines(text);
                (*offset, self.metrics.wrap(&text, size, *width))
            })
            .collect();
        let rows = wrapped.iter().map(|(_, l)| l.len()).max().unwrap_or(0);
        let leading = size * LEADING;
        for i in 0..rows {
            self.ensure(leading);
            let baseline = self.y + size * ASCENT;
            for (offset, lines) in &wrapped {
                if let Some(line) = lines.get(i) {
                    self.draw(MARGIN + offset, baseline, size, line.clone(), ink);
                }
            }
            self.y += leading;
        }
    }

    fn field(&mut self, label: &str, value: &str) {
        self.row(
            &[
                (0.0, LABEL_WIDTH, label),
                (
                    LABEL_WIDTH + LABEL_GAP,
                    CONTENT_WIDTH - LABEL_WIDTH - LABEL_GAP,
                    value,
                ),
            ],
            BODY,
            Ink::Black,
        );
    }

    /// A section heading, kept on one page with a few lines after it.
    fn heading(&mut self, text: &str) {
        self.gap(9.0);
        self.ensure(12.0 * LEADING + 3.0 * BODY * LEADING);
        self.aligned(text, 12.0, 0.0, Ink::Black);
        self.gap(-3.0);
        self.rule(0.5);
        self.gap(4.0);
    }

    /// Every text placed, page by page (for tests and checks).
    #[cfg(test)]
    fn texts(&self) -> impl Iterator<Item = &str> {
        self.pages.iter().flatten().filter_map(|op| match op {
            Op::Text { text, .. } => Some(text.as_str()),
            Op::Rule { .. } => None,
        })
    }
}

impl Metrics {
    /// [`Metrics::printable`] line by line, keeping the line breaks.
    fn printable_lines(&self, text: &str) -> String {
        text.split('\n')
            .map(|line| self.printable(line))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn lay_out<'m>(content: &ReportContent, content_hash: &str, metrics: &'m Metrics) -> Layout<'m> {
    let w = Words::new(content);
    let l = w.l;
    let mut lay = Layout::new(metrics);
    lay.aligned(
        &format!(
            "{}{}{}{}{}",
            l.case_id,
            l.colon,
            content.case_id,
            l.gap,
            w.version()
        ),
        SMALL,
        1.0,
        Ink::Grey,
    );
    lay.gap(4.0);
    lay.aligned(l.title, 20.0, 0.5, Ink::Black);
    if w.amended() {
        lay.aligned(
            &format!("{}{}{}", l.open.trim_start(), l.amended, l.close),
            12.0,
            0.5,
            Ink::Red,
        );
    }
    lay.gap(2.0);
    lay.rule(1.0);
    lay.gap(8.0);
    for (label, value) in w.fields() {
        lay.field(label, &value);
    }

    let final_dx = &content.final_diagnosis;
    lay.heading(l.diagnosis);
    lay.paragraph(
        &w.coded(&final_dx.label, &final_dx.code),
        12.0,
        0.0,
        Ink::Black,
    );
    lay.heading(l.findings);
    let findings = if final_dx.findings.is_empty() {
        l.none
    } else {
        final_dx.findings.as_str()
    };
    lay.paragraph(findings, BODY, 0.0, Ink::Black);
    lay.heading(l.comments);
    for line in w.comments() {
        lay.paragraph(&line, BODY, 0.0, Ink::Black);
    }

    lay.heading(l.slides);
    const COLUMNS: [(f32, f32); 4] = [(0.0, 80.0), (86.0, 215.0), (307.0, 100.0), (413.0, 82.0)];
    let header = [l.slide_label, l.slide_file, l.slide_size, l.slide_mpp];
    let cells: Vec<(f32, f32, &str)> = COLUMNS
        .iter()
        .zip(header)
        .map(|(&(x, width), text)| (x, width, text))
        .collect();
    lay.row(&cells, SMALL + 0.5, Ink::Grey);
    for slide in &content.slides {
        let size = format!("{} × {}", slide.width, slide.height);
        let mpp = w.mpp(slide.mpp);
        let values = [
            slide.label.as_deref().unwrap_or(l.none),
            slide.filename.as_str(),
            size.as_str(),
            mpp.as_str(),
        ];
        let cells: Vec<(f32, f32, &str)> = COLUMNS
            .iter()
            .zip(values)
            .map(|(&(x, width), text)| (x, width, text))
            .collect();
        lay.row(&cells, 9.0, Ink::Black);
    }

    lay.heading(l.reads);
    for read in &content.reads {
        lay.ensure(3.0 * BODY * LEADING);
        lay.paragraph(
            &format!(
                "{}{}{}{}{}",
                w.read_kind(read),
                l.gap,
                w.person(&read.reader),
                l.gap,
                w.time(read.entered_at)
            ),
            BODY,
            0.0,
            Ink::Grey,
        );
        lay.paragraph(&w.coded(&read.label, &read.code), BODY, 12.0, Ink::Black);
        if !read.findings.is_empty() {
            lay.paragraph(&read.findings, BODY, 12.0, Ink::Black);
        }
        for line in w.slide_reads(read) {
            lay.paragraph(&line, 9.0, 12.0, Ink::Black);
        }
        lay.gap(3.0);
    }

    lay.heading(l.pathologists);
    for (role, person) in w.pathologists() {
        lay.field(role, &person);
    }
    lay.gap(8.0);
    lay.paragraph(
        &format!("{}{}{content_hash}", l.hash, l.colon),
        SMALL,
        0.0,
        Ink::Black,
    );
    lay
}

/// The page footers: what the report is, its version and page, and its hash, on every page.
fn footers(content: &ReportContent, content_hash: &str, lay: &mut Layout<'_>) {
    let w = Words::new(content);
    let l = w.l;
    let total = lay.pages.len();
    let title = w.title();
    for (index, page) in lay.pages.iter_mut().enumerate() {
        let first = format!(
            "{title}{}{}{}{}{}{}{}",
            l.gap,
            l.case_id,
            l.colon,
            content.case_id,
            l.gap,
            w.version(),
            l.gap
        ) + &(l.page)(index + 1, total);
        let rule_y = PAGE_HEIGHT - 52.0;
        page.push(Op::Rule {
            x1: MARGIN,
            x2: PAGE_WIDTH - MARGIN,
            y: rule_y,
            width: 0.5,
        });
        for (line, text) in [first, format!("SHA-256 {content_hash}")]
            .into_iter()
            .enumerate()
        {
            page.push(Op::Text {
                x: MARGIN,
                y: rule_y + 12.0 + 10.0 * line as f32,
                size: 7.0,
                text: lay.metrics.printable(&text),
                ink: Ink::Grey,
            });
        }
    }
}

fn fill(ink: Ink) -> Fill {
    let paint = match ink {
        Ink::Black => rgb::Color::new(0, 0, 0),
        Ink::Grey => rgb::Color::new(70, 76, 88),
        Ink::Red => rgb::Color::new(164, 0, 0),
    };
    Fill {
        paint: paint.into(),
        opacity: NormalizedF32::ONE,
        rule: FillRule::default(),
    }
}

/// The PDF's creation date: the signing moment on the reading hospital's clock.
fn pdf_date(unix: i64, time_zone: &str) -> DateTime {
    let zone = jiff::tz::TimeZone::get(time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
    let at = jiff::Timestamp::from_second(unix).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let local = at.to_zoned_datetime(zone);
    let offset = local.offset().seconds();
    DateTime::new(u16::try_from(local.year()).unwrap_or(1970))
        .month(u8::try_from(local.month()).unwrap_or(1))
        .day(u8::try_from(local.day()).unwrap_or(1))
        .hour(u8::try_from(local.hour()).unwrap_or(0))
        .minute(u8::try_from(local.minute()).unwrap_or(0))
        .second(u8::try_from(local.second()).unwrap_or(0))
        .utc_offset_hour(i8::try_from(offset / 3600).unwrap_or(0))
        .utc_offset_minute(u8::try_from((offset.abs() % 3600) / 60).unwrap_or(0))
}

/// The report as a PDF/A-2b document.
pub fn pdf(content: &ReportContent, content_hash: &str) -> Result<Vec<u8>, RenderError> {
    let metrics = Metrics::new()?;
    let mut lay = lay_out(content, content_hash, &metrics);
    footers(content, content_hash, &mut lay);
    write_pdf(content, content_hash, lay.pages)
}

fn write_pdf(
    content: &ReportContent,
    content_hash: &str,
    pages: Vec<Vec<Op>>,
) -> Result<Vec<u8>, RenderError> {
    let w = Words::new(content);
    let font = Font::new(Data::from(FONT), 0)
        .ok_or_else(|| RenderError::Font("not an OpenType font".into()))?;
    let configuration = ConfigurationBuilder::new()
        .with_archival_validator(Archival::A2_B)
        .finish()
        .map_err(|e| RenderError::Pdf(format!("{e:?}")))?;
    let settings = SerializeSettings {
        configuration,
        enable_tagging: false,
        ..SerializeSettings::default()
    };
    let mut document = Document::new_with(settings);
    document.set_metadata(
        Metadata::new()
            .title(format!("{} {} {}", w.title(), content.case_id, w.version()))
            .description(format!("{} {}", w.l.title, content.hub))
            .keywords(vec![pdf_keywords(content, content_hash)])
            .language(content.language.as_str().to_string())
            .authors(vec![content.signed_by.name.clone()])
            .creator("pathfed".to_string())
            .creation_date(pdf_date(content.signed_at, &content.time_zone)),
    );
    let size = PageSettings::from_wh(PAGE_WIDTH, PAGE_HEIGHT)
        .ok_or_else(|| RenderError::Pdf("bad page size".into()))?;
    for ops in pages {
        let mut page = document.start_page_with(size.clone());
        let mut surface = page.surface();
        for op in ops {
            match op {
                Op::Text {
                    x,
                    y,
                    size,
                    text,
                    ink,
                } => {
                    surface.set_stroke(None);
                    surface.set_fill(Some(fill(ink)));
                    surface.draw_text(
                        Point::from_xy(x, y),
                        font.clone(),
                        size,
                        &text,
                        false,
                        TextDirection::LeftToRight,
                    );
                }
                Op::Rule { x1, x2, y, width } => {
                    let mut path = PathBuilder::new();
                    path.move_to(x1, y);
                    path.line_to(x2, y);
                    if let Some(path) = path.finish() {
                        surface.set_fill(None);
                        surface.set_stroke(Some(Stroke {
                            paint: rgb::Color::new(150, 156, 168).into(),
                            width,
                            ..Stroke::default()
                        }));
                        surface.draw_path(&path);
                        surface.set_stroke(None);
                    }
                }
            }
        }
        surface.finish();
        page.finish();
    }
    document
        .finish()
        .map_err(|e| RenderError::Pdf(format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reads::ReadKind;
    use crate::report_content::{FinalDiagnosis, REPORT_FORMAT, ReportSlide, ReportSlideRead};

    const FINDINGS: &str = "中分化型管状腺癌を認めます。";

    fn person(username: &str, name: &str, qualification: Option<&str>) -> ReportPerson {
        ReportPerson {
            username: username.into(),
            name: name.into(),
            qualification: qualification.map(Into::into),
        }
    }

    /// A Japanese hub's report; 2026-12-05 06:04:00 UTC is 15:04 in Tokyo.
    fn sample(language: Lang) -> ReportContent {
        let yamada = person("path1", "山田 太郎", Some("病理専門医"));
        let suzuki = person("path2", "鈴木 花子", Some("病理専門医"));
        let slide = "0f3c-slide";
        let read = |kind, reader: &ReportPerson| ReportRead {
            kind,
            reader: reader.clone(),
            code: "GAS-G5".into(),
            label: "Group 5（癌）".into(),
            findings: FINDINGS.into(),
            slides: vec![ReportSlideRead {
                slide_id: slide.into(),
                label: Some("Group 5（癌）".into()),
                code: Some("GAS-G5".into()),
                findings: "腺管の癒合を伴う異型腺管が浸潤性に増殖しています。".into(),
            }],
            entered_at: 1_796_450_000,
        };
        ReportContent {
            format: REPORT_FORMAT,
            language,
            time_zone: "Asia/Tokyo".into(),
            case_id: "5d1c7a2e-0000-4000-8000-000000000001".into(),
            version: 1,
            supersedes_hash: None,
            amendment_reason: None,
            spoke: "さくら市民病院".into(),
            hub: "東都大学病院 病理診断科".into(),
            patient_id: "患者ID-0123".into(),
            age_band: "60-69".into(),
            sex: "male".into(),
            organ: "胃".into(),
            specimen: "内視鏡的生検（胃前庭部）".into(),
            clinical_question: "胃前庭部に不整な陥凹性病変あり。癌の有無についてご高診ください。"
                .into(),
            urgency: "routine".into(),
            submitted_at: 1_796_400_000,
            taxonomy: "gastric-group".into(),
            slides: vec![ReportSlide {
                id: slide.into(),
                label: Some("A1".into()),
                filename: "胃生検_標本①.svs".into(),
                width: 2400,
                height: 1800,
                mpp: Some(0.2527),
            }],
            reads: vec![
                read(ReadKind::Primary, &yamada),
                read(ReadKind::Second, &suzuki),
            ],
            concordant: true,
            final_diagnosis: FinalDiagnosis {
                code: "GAS-G5".into(),
                label: "Group 5（癌）".into(),
                findings: FINDINGS.into(),
                decided_by: None,
                note: String::new(),
            },
            signed_by: yamada,
            signed_at: 1_796_450_640,
        }
    }

    #[test]
    fn every_label_and_sample_character_has_a_glyph() {
        let metrics = Metrics::new().unwrap();
        let mut texts: Vec<String> = Vec::new();
        for content in [sample(Lang::Ja), sample(Lang::En)] {
            let lay = lay_out(&content, &"ab".repeat(32), &metrics);
            texts.extend(lay.texts().map(str::to_string));
        }
        for labels in [&JA, &EN] {
            texts.extend(
                [
                    labels.title,
                    labels.amended,
                    labels.preview,
                    labels.preview_note,
                    labels.discordant,
                    labels.note,
                    labels.amendment_reason,
                    labels.supersedes,
                    labels.decided_by,
                    labels.hash_pending,
                    labels.other,
                    labels.female,
                    labels.urgent,
                    labels.unknown,
                    labels.none,
                ]
                .map(str::to_string),
            );
            texts.push((labels.page)(1, 2));
            texts.push((labels.age)("90+").unwrap());
        }
        let joined = texts.concat();
        assert!(joined.contains(FINDINGS), "the findings were not placed");
        assert!(joined.contains("胃生検_標本①.svs"));
        assert!(joined.contains("山田 太郎（病理専門医）"));
        for c in joined.chars() {
            let glyph = metrics.face.glyph_index(c);
            assert!(
                glyph.is_some_and(|g| g.0 != 0),
                "{c:?} (U+{:04X}) maps to no glyph",
                c as u32
            );
        }
    }

    #[test]
    fn japanese_wraps_within_the_width_without_breaking_before_closing_marks() {
        let metrics = Metrics::new().unwrap();
        let text = "中分化型管状腺癌を認めます。腫瘍は粘膜下層に浸潤し（pT1b）、\
                    脈管侵襲は認めません。「断端」は陰性です。";
        for width in [60.0, 97.0, 150.0] {
            let lines = metrics.wrap(text, BODY, width);
            assert!(lines.len() > 1, "{width}: {lines:?}");
            for line in &lines {
                assert!(
                    metrics.width(line, BODY) <= width,
                    "{width}: {line:?} is wider"
                );
                let first = line.chars().next().unwrap();
                assert!(
                    !no_line_start(first),
                    "{width}: {line:?} starts with {first}"
                );
                let last = line.chars().last().unwrap();
                assert!(!no_line_end(last), "{width}: {line:?} ends with {last}");
            }
            assert_eq!(lines.concat(), text, "{width}: text lost or changed");
        }
    }

    #[test]
    fn latin_wraps_at_spaces_and_overlong_words_are_cut() {
        let metrics = Metrics::new().unwrap();
        let text = "Chronic active gastritis with intestinal metaplasia; no dysplasia seen in the \
                    sampled mucosa.";
        let lines = metrics.wrap(text, BODY, 150.0);
        assert!(lines.len() > 2);
        for line in &lines {
            assert!(metrics.width(line, BODY) <= 150.0, "{line}");
        }
        assert_eq!(lines.join(" "), text);
        let long = "x".repeat(200);
        let cut = metrics.wrap(&long, BODY, 100.0);
        assert!(cut.len() > 1);
        assert!(cut.iter().all(|l| metrics.width(l, BODY) <= 100.0));
        assert_eq!(cut.concat(), long);
        // Kept line breaks, and a mixed line breaks between Japanese and Latin.
        let mixed = metrics.wrap(
            "第1行\n胃体部 tubular adenocarcinoma を認めます",
            BODY,
            80.0,
        );
        assert_eq!(mixed[0], "第1行");
        assert!(mixed.iter().all(|l| metrics.width(l, BODY) <= 80.0));
    }

    #[test]
    fn characters_the_font_lacks_are_replaced_not_dropped() {
        let metrics = Metrics::new().unwrap();
        assert!(!metrics.has('\u{1F600}'));
        assert_eq!(metrics.printable("癌\u{1F600}"), "癌〓");
        // The micro sign prints as the Greek letter it stands for.
        assert!(!metrics.has('µ') || metrics.printable("µm") == "µm");
        assert_eq!(metrics.printable("0.25µm").chars().last(), Some('m'));
        assert!(metrics.printable("0.25µm").chars().all(|c| metrics.has(c)));
        assert_eq!(metrics.printable("a\tb\u{200B}c\u{FE0F}"), "a bc");
        // A decomposed kana (か + combining voiced mark) prints as the one character が.
        assert_eq!(metrics.printable("\u{304B}\u{3099}ん"), "がん");
        // And the PDF with them still validates as PDF/A (no "no glyph" box).
        let mut content = sample(Lang::Ja);
        content.final_diagnosis.findings = "所見 \u{1F600} µm".into();
        let pdf = pdf(&content, &"0".repeat(64)).unwrap();
        assert!(pdf.starts_with(b"%PDF-"));
    }

    #[test]
    fn the_pdf_names_itself_and_prints_every_page_footer() {
        let content = sample(Lang::Ja);
        let hash = content.hash();
        let bytes = pdf(&content, &hash).unwrap();
        assert!(bytes.starts_with(b"%PDF-1.7"));
        let keywords = pdf_keywords(&content, &hash);
        assert!(
            bytes
                .windows(keywords.len())
                .any(|w| w == keywords.as_bytes()),
            "keywords missing"
        );
        assert!(bytes.windows(8).any(|w| w == b"pdfaid:p"), "no PDF/A id");
        let claim = crate::report::pdf_claim(&bytes).unwrap();
        assert_eq!((claim.case_id, claim.version), (content.case_id.clone(), 1));
        assert_eq!(claim.content_hash, hash);
        // A long report runs over several pages, each with its footer.
        let mut long = content.clone();
        long.final_diagnosis.findings = FINDINGS.repeat(200);
        let metrics = Metrics::new().unwrap();
        let mut lay = lay_out(&long, &hash, &metrics);
        footers(&long, &hash, &mut lay);
        let pages = lay.pages.len();
        assert!(pages > 1);
        let last = (JA.page)(pages, pages);
        assert!(lay.texts().any(|t| t.ends_with(&last)), "no {last}");
        for page in &lay.pages {
            for op in page {
                if let Op::Text {
                    x, y, size, text, ..
                } = op
                {
                    assert!(*y <= PAGE_HEIGHT - 20.0 && *y > 0.0, "{text} off the page");
                    assert!(
                        x + metrics.width(text, *size) <= PAGE_WIDTH - MARGIN + 0.01,
                        "{text} runs past the margin"
                    );
                }
            }
        }
        assert!(pdf(&long, &hash).is_ok());
    }

    #[test]
    fn html_follows_the_hub_language_and_clock() {
        let ja = html(&sample(Lang::Ja), "feed");
        assert!(ja.contains("<html lang=\"ja\">"));
        for expected in [
            "病理診断報告書",
            "2026年12月5日 15:04 JST",
            "受付日",
            "60～69歳・男性",
            "山田 太郎（病理専門医）",
            "A1（胃生検_標本①.svs）",
            "feed",
        ] {
            assert!(ja.contains(expected), "Japanese report lacks {expected:?}");
        }
        let en = html(&sample(Lang::En), "feed");
        assert!(en.contains("<html lang=\"en\">"));
        for expected in [
            "Pathology Report",
            "5 Dec 2026 15:04 JST",
            "60-69 years / Male",
        ] {
            assert!(en.contains(expected), "English report lacks {expected:?}");
        }
        let preview = preview_html(&sample(Lang::Ja));
        assert!(preview.contains(JA.preview) && preview.contains(JA.hash_pending));
        assert!(!ja.contains(JA.preview));
        let mut amended = sample(Lang::Ja);
        amended.amendment_reason = Some("深切り標本で組織型を訂正".into());
        amended.supersedes_hash = Some("beef".into());
        let amended = html(&amended, "feed");
        assert!(amended.contains("訂正報告") && amended.contains("深切り標本で組織型を訂正"));
    }

    #[test]
    fn the_creation_date_is_on_the_hub_clock() {
        let date = pdf_date(1_796_450_640, "Asia/Tokyo");
        assert_eq!(
            date,
            DateTime::new(2026)
                .month(12)
                .day(5)
                .hour(15)
                .minute(4)
                .second(0)
                .utc_offset_hour(9)
                .utc_offset_minute(0)
        );
    }
}
