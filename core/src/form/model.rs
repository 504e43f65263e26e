//! The form model: what an imported XLSForm says, independent of any spreadsheet, serialisable
//! as JSON. Expressions are kept as their source text (checked at import); the engine parses
//! them once when it compiles the form.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Text in several languages, keyed by the language as the form names it (`English (en)`), or
/// `default` when the form has no language columns.
pub type Translations = BTreeMap<String, String>;

/// The key of untranslated text.
pub const DEFAULT_LANGUAGE: &str = "default";

/// An imported form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Form {
    pub settings: Settings,
    /// The languages of the form's text, in column order (`default` when untranslated).
    pub languages: Vec<String>,
    /// Questions, groups and repeats in document order (a group precedes its children).
    pub nodes: Vec<Node>,
    /// Choice lists by name.
    pub choice_lists: BTreeMap<String, Vec<Choice>>,
    /// The `entities` sheet's declarations, kept as written (shared lists are not built yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entities: Vec<EntityDeclaration>,
    /// The form version's media files (`places.csv`), by name, as SHA-256 of their bytes: set
    /// when the server publishes the version, which carries the files to devices as blobs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub media: BTreeMap<String, String>,
}

/// One row of the `entities` sheet: the list (`list_name`) whose entities a submission creates
/// or updates, and the sheet's other columns (`label`, `entity_id`, `create_if`, `update_if`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityDeclaration {
    pub list_name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub columns: BTreeMap<String, String>,
    #[serde(default)]
    pub row: u32,
}

/// The settings sheet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub form_id: String,
    pub version: String,
    pub title: String,
    pub default_language: Option<String>,
    pub instance_name: Option<String>,
}

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuestionType {
    Group,
    Repeat,
    Text,
    Integer,
    Decimal,
    Range,
    SelectOne,
    SelectMultiple,
    SelectOneFromFile,
    SelectMultipleFromFile,
    Rank,
    Note,
    Date,
    Time,
    DateTime,
    Geopoint,
    Geotrace,
    Geoshape,
    Image,
    Audio,
    Video,
    File,
    Barcode,
    Acknowledge,
    Trigger,
    Calculate,
    Hidden,
    // Metadata, filled by the device.
    Start,
    End,
    Today,
    DeviceId,
    /// The SIM card's serial number (only old Android versions still give it).
    SimSerial,
    /// The subscriber id (IMSI; only old Android versions still give it).
    SubscriberId,
    Username,
    PhoneNumber,
    Email,
    /// The session's timeline (ODK's audit log), always named `audit`.
    Audit,
    AudioAudit,
    StartGeopoint,
    InstanceId,
}

impl QuestionType {
    /// The name used in JSON and by the CLI.
    pub fn as_str(self) -> &'static str {
        use QuestionType::*;
        match self {
            Group => "group",
            Repeat => "repeat",
            Text => "text",
            Integer => "integer",
            Decimal => "decimal",
            Range => "range",
            SelectOne => "select_one",
            SelectMultiple => "select_multiple",
            SelectOneFromFile => "select_one_from_file",
            SelectMultipleFromFile => "select_multiple_from_file",
            Rank => "rank",
            Note => "note",
            Date => "date",
            Time => "time",
            DateTime => "date_time",
            Geopoint => "geopoint",
            Geotrace => "geotrace",
            Geoshape => "geoshape",
            Image => "image",
            Audio => "audio",
            Video => "video",
            File => "file",
            Barcode => "barcode",
            Acknowledge => "acknowledge",
            Trigger => "trigger",
            Calculate => "calculate",
            Hidden => "hidden",
            Start => "start",
            End => "end",
            Today => "today",
            DeviceId => "deviceid",
            SimSerial => "simserial",
            SubscriberId => "subscriberid",
            Username => "username",
            PhoneNumber => "phonenumber",
            Email => "email",
            Audit => "audit",
            AudioAudit => "audio_audit",
            StartGeopoint => "start_geopoint",
            InstanceId => "instance_id",
        }
    }

    /// A group or repeat rather than a question.
    pub fn is_container(self) -> bool {
        matches!(self, QuestionType::Group | QuestionType::Repeat)
    }

    /// Filled by the device, never shown.
    pub fn is_metadata(self) -> bool {
        use QuestionType::*;
        matches!(
            self,
            Start
                | End
                | Today
                | DeviceId
                | SimSerial
                | SubscriberId
                | Username
                | PhoneNumber
                | Email
                | Audit
                | AudioAudit
                | StartGeopoint
                | InstanceId
        )
    }

    /// Takes its choices from a list.
    pub fn is_select(self) -> bool {
        use QuestionType::*;
        matches!(self, SelectOne | SelectMultiple | SelectOneFromFile | SelectMultipleFromFile | Rank)
    }

    /// Several choices at once, stored space-separated.
    pub fn is_multiple(self) -> bool {
        matches!(
            self,
            QuestionType::SelectMultiple | QuestionType::SelectMultipleFromFile | QuestionType::Rank
        )
    }

    /// Shown to the person filling the form (not a calculation, hidden value or metadata).
    pub fn is_shown(self) -> bool {
        !self.is_metadata() && !matches!(self, QuestionType::Calculate | QuestionType::Hidden)
    }
}

/// A question, group or repeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    /// The path from the form's root through groups and repeats: `household/members/age`.
    pub path: String,
    #[serde(rename = "type")]
    pub kind: QuestionType,
    /// Index in `Form::nodes` of the enclosing group or repeat.
    pub parent: Option<usize>,
    /// The choice list of a select question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
    /// The external file of a `select_one_from_file` question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub label: Translations,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hint: Translations,
    /// An expression; `true()` for a plain "yes".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub required_message: Translations,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relevant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub constraint_message: Translations,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calculation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appearance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choice_filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_count: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
    /// Metadata in its `uri:` form (`uri:deviceid`): the value as a URI (`mailto:`, `tel:`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub uri: bool,
    /// The spreadsheet row it came from (1-based; 0 for nodes the import adds).
    #[serde(default)]
    pub row: u32,
}

impl Node {
    /// A node with only its name, path and type set.
    pub fn new(name: &str, path: &str, kind: QuestionType, parent: Option<usize>) -> Node {
        Node {
            name: name.to_owned(),
            path: path.to_owned(),
            kind,
            parent,
            list: None,
            file: None,
            label: Translations::new(),
            hint: Translations::new(),
            required: None,
            required_message: Translations::new(),
            relevant: None,
            constraint: None,
            constraint_message: Translations::new(),
            calculation: None,
            default: None,
            read_only: false,
            appearance: None,
            choice_filter: None,
            repeat_count: None,
            parameters: BTreeMap::new(),
            uri: false,
            row: 0,
        }
    }
}

/// One choice of a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub label: Translations,
    /// Other columns (used by choice filters: `district` of a corregimiento) and media.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

impl Form {
    /// The form as JSON.
    pub fn to_json(&self) -> String {
        // A Form holds only strings, maps and plain enums: serialising it cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// A form from its JSON.
    pub fn from_json(json: &str) -> Result<Form, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// The first node with this name, if any (names are unique among siblings; a name used in
    /// several groups is better found by its path, [`Form::node_at`]).
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The node at this schema path (`group/question`).
    pub fn node_at(&self, path: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.path == path)
    }

    /// A select question's choices: its list in the form, or for a `…_from_file` question the
    /// list named by its file, when a reader outside a session has added one from the file's
    /// rows (see [`super::media::file_choices`]).
    pub fn choices_of(&self, node: &Node) -> Option<&Vec<Choice>> {
        node.list.as_ref().or(node.file.as_ref()).and_then(|l| self.choice_lists.get(l))
    }

    /// Picks the language key for a requested language: an exact key (`English (en)`), its code
    /// (`en`) or its name (`English`); else the default language; else the first.
    pub fn language(&self, wanted: Option<&str>) -> String {
        let find = |w: &str| {
            let w = w.trim();
            self.languages.iter().find(|l| {
                l.as_str() == w
                    || language_code(l).is_some_and(|c| c.eq_ignore_ascii_case(w))
                    || language_name(l).eq_ignore_ascii_case(w)
            })
        };
        if let Some(l) = wanted.and_then(find) {
            return l.clone();
        }
        if let Some(l) = self.settings.default_language.as_deref().and_then(find) {
            return l.clone();
        }
        self.languages.first().cloned().unwrap_or_else(|| DEFAULT_LANGUAGE.to_owned())
    }
}

/// `en` of `English (en)`.
pub fn language_code(lang: &str) -> Option<&str> {
    let open = lang.rfind('(')?;
    let rest = lang[open + 1..].strip_suffix(')')?;
    Some(rest.trim())
}

/// `English` of `English (en)`.
pub fn language_name(lang: &str) -> &str {
    match lang.rfind('(') {
        Some(i) => lang[..i].trim(),
        None => lang.trim(),
    }
}

/// Text in a language, falling back to the default text, then to any text.
pub fn translate<'a>(text: &'a Translations, lang: &str) -> Option<&'a str> {
    text.get(lang).or_else(|| text.get(DEFAULT_LANGUAGE)).or_else(|| text.values().next()).map(String::as_str)
}
