//! The resource file format: YAML or JSON documents of `kind`, `name`, `labels`, `spec`.
//!
//! A file holds several documents: YAML documents separated by `---`, or a JSON object or
//! array of objects (a top-level YAML sequence is read the same way). `spec` is the kind's
//! message in the proto3 JSON mapping, so both `route_table` and `routeTable` are accepted and
//! unknown fields are rejected. Every document is read through [`serde_json::Value`] so that
//! both formats share one decoder and one field-path convention.
//!
//! # Limits
//! A file is refused, with an error naming it, when it is larger than [`MAX_FILE_BYTES`]
//! (64 MiB), holds more than [`MAX_DOCUMENTS`] documents, nests lists and mappings deeper than
//! [`MAX_DEPTH`] levels, uses more than [`MAX_ALIASES`] YAML aliases (`*name`), or holds more
//! than [`MAX_NODES`] values, or more than [`MAX_NODES_PER_BYTE`] per byte of the file, once
//! aliases are expanded (which stops "billion laughs" files that are small on disk and huge in
//! memory). Parsing a file costs memory in proportion to its
//! size, and no input makes it panic.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::pb::{Kind, Resource, resource::Spec};
use crate::reference::REDACTED;

/// Largest file read, in bytes (64 MiB).
pub const MAX_FILE_BYTES: usize = 64 << 20;
/// Most documents in one file: YAML documents, or the items of a top-level list.
pub const MAX_DOCUMENTS: usize = 100_000;
/// Deepest nesting of lists and mappings in a document.
pub const MAX_DEPTH: usize = 64;
/// Most YAML alias uses (`*name`) in one file.
pub const MAX_ALIASES: usize = 10_000;
/// Most values (mappings, lists and scalars) in one file, aliases expanded: more than a file of
/// [`MAX_FILE_BYTES`] of real config holds.
pub const MAX_NODES: usize = 5_000_000;
/// Most values per byte of a YAML file, aliases expanded. A file without aliases holds fewer
/// values than bytes; this leaves room for anchors used a few times over, and stops a small
/// file whose aliases expand to millions of values (a "billion laughs") at once.
pub const MAX_NODES_PER_BYTE: usize = 8;

/// A resource and where it was read from.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    /// The resource.
    pub resource: Resource,
    /// The file.
    pub path: PathBuf,
    /// The document's index in the file (0-based).
    pub document: usize,
    /// The line the document starts on (1-based), or 0 when unknown (JSON, list items).
    pub line: usize,
}

/// An error in a file, naming the file, the document and the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct FileError {
    /// The file.
    pub path: String,
    /// The document's index in the file (0-based).
    pub document: usize,
    /// The line the document starts on (1-based), or 0 when unknown.
    pub line: usize,
    /// Path of the field at fault, e.g. `spec.virtual_hosts[0].domains`.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// The file or directory could not be read at all (it is missing, or not readable): a
    /// problem of the machine, not of the file's content.
    pub unreadable: bool,
}

/// `a.yaml: document 2 (line 31): spec.port: ...`
impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: document {}", self.path, self.document)?;
        if self.line > 0 {
            write!(f, " (line {})", self.line)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A resource that cannot be rendered in the file format.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The JSON mapping refused a value, e.g. an enum number this build does not know.
    #[error("cannot render {resource} as JSON: {source}")]
    Json {
        /// The resource, as "Kind/name".
        resource: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The YAML emitter refused a value.
    #[error("cannot render {resource} as YAML: {source}")]
    Yaml {
        /// The resource, as "Kind/name".
        resource: String,
        /// Why.
        #[source]
        source: serde_saphyr::SerializeError,
    },
}

/// Loads files and directories (every `*.yaml`, `*.yml`, `*.json` directly in a directory,
/// in name order). Reports every error of every file, including a kind and name defined twice.
pub fn load_paths(paths: &[PathBuf]) -> Result<Vec<Loaded>, Vec<FileError>> {
    let mut loaded = Vec::new();
    let mut errors = Vec::new();
    for file in expand(paths, &mut errors) {
        // Refused before it is read, so a huge file costs nothing.
        if let Ok(meta) = std::fs::metadata(&file)
            && meta.len() > MAX_FILE_BYTES as u64
        {
            errors.push(file_error(&file, FILE, "", too_large(meta.len())));
            continue;
        }
        match std::fs::read_to_string(&file) {
            Ok(text) => decode_file(&file, &text, &mut loaded, &mut errors),
            // Text that is not UTF-8 was read: its content is at fault.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => errors.push(file_error(
                &file,
                FILE,
                "",
                format!("cannot read file: {e}"),
            )),
            Err(e) => errors.push(FileError {
                unreadable: true,
                ..file_error(&file, FILE, "", format!("cannot read file: {e}"))
            }),
        }
    }
    check_duplicates(&loaded, &mut errors);
    if errors.is_empty() {
        Ok(loaded)
    } else {
        Err(errors)
    }
}

/// Parses the documents of one file's text; `path` is used in errors and to pick JSON (for a
/// `.json` extension) or YAML (otherwise; YAML also reads JSON).
pub fn parse(path: &Path, text: &str) -> Result<Vec<Loaded>, Vec<FileError>> {
    let mut loaded = Vec::new();
    let mut errors = Vec::new();
    decode_file(path, text, &mut loaded, &mut errors);
    check_duplicates(&loaded, &mut errors);
    if errors.is_empty() {
        Ok(loaded)
    } else {
        Err(errors)
    }
}

/// One resource as a JSON envelope (`kind`, `name`, `labels` when non-empty, `spec`), as
/// [`parse`] reads it.
pub fn to_value(resource: &Resource) -> Result<Value, RenderError> {
    serde_json::to_value(Envelope::of(resource)).map_err(|source| RenderError::Json {
        resource: resource.key().to_string(),
        source,
    })
}

/// Renders resources as YAML documents that [`parse`] reads back unchanged. Fields after the
/// envelope's are sorted by name, so the output is deterministic (map fields too).
pub fn to_yaml(resources: &[Resource]) -> Result<String, RenderError> {
    let documents = resources
        .iter()
        .map(|r| {
            serde_saphyr::to_string(&Ordered(&to_value(r)?)).map_err(|source| RenderError::Yaml {
                resource: r.key().to_string(),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(documents.join("---\n"))
}

/// Renders resources as a JSON array that [`parse`] reads back unchanged, ordered as
/// [`to_yaml`] orders.
pub fn to_json(resources: &[Resource]) -> Result<String, RenderError> {
    let values = resources
        .iter()
        .map(to_value)
        .collect::<Result<Vec<_>, _>>()?;
    let ordered: Vec<_> = values.iter().map(Ordered).collect();
    let mut text = serde_json::to_string_pretty(&ordered).map_err(|source| RenderError::Json {
        resource: "resources".into(),
        source,
    })?;
    text.push('\n');
    Ok(text)
}

/// The files named by `paths`: files as given, directories expanded to their resource files.
fn expand(paths: &[PathBuf], errors: &mut Vec<FileError>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in paths {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        let entries = match std::fs::read_dir(path) {
            Ok(entries) => entries,
            Err(e) => {
                errors.push(FileError {
                    unreadable: true,
                    ..file_error(path, FILE, "", format!("cannot read directory: {e}"))
                });
                continue;
            }
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_resource_file(p))
            .collect();
        found.sort();
        files.extend(found);
    }
    files
}

fn is_resource_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn is_json(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()) == Some("json")
}

/// A document's index in its file and the line it starts on (0: unknown).
#[derive(Clone, Copy)]
struct Place {
    document: usize,
    line: usize,
}

const FILE: Place = Place {
    document: 0,
    line: 0,
};

fn file_error(path: &Path, at: Place, field: &str, message: String) -> FileError {
    FileError {
        path: path.display().to_string(),
        document: at.document,
        line: at.line,
        field: field.to_string(),
        message,
        unreadable: false,
    }
}

fn too_large(bytes: u64) -> String {
    format!("the file is {bytes} bytes; the limit is {MAX_FILE_BYTES} (64 MiB)")
}

/// Decodes every document of one file, collecting resources and errors.
fn decode_file(path: &Path, text: &str, loaded: &mut Vec<Loaded>, errors: &mut Vec<FileError>) {
    if text.len() > MAX_FILE_BYTES {
        errors.push(file_error(path, FILE, "", too_large(text.len() as u64)));
        return;
    }
    let documents = match documents(path, text) {
        Ok(documents) => documents,
        Err((message, at)) => {
            errors.push(file_error(path, at, "", message));
            return;
        }
    };
    for (document, (value, line)) in documents.into_iter().enumerate() {
        match decode(value) {
            Ok(resource) => loaded.push(Loaded {
                resource,
                path: path.to_path_buf(),
                document,
                line,
            }),
            Err((field, message)) => {
                let at = Place { document, line };
                errors.push(file_error(path, at, &field, message));
            }
        }
    }
}

/// The documents of a file with the lines they start on; a top-level list stands for one
/// document per item. A YAML syntax error names the document it is in.
fn documents(path: &Path, text: &str) -> Result<Vec<(Value, usize)>, (String, Place)> {
    let roots: Vec<(Value, usize)> = if is_json(path) {
        // serde_json stops at 128 levels itself, before the depth check below.
        let root: Value =
            serde_json::from_str(text).map_err(|e| (format!("invalid JSON: {e}"), FILE))?;
        if depth(&root) > MAX_DEPTH {
            return Err((
                format!("invalid JSON: nested deeper than {MAX_DEPTH} levels"),
                FILE,
            ));
        }
        vec![(root, 0)]
    } else {
        // YAML 1.1 booleans would turn names like `y` or `no` into `false`; the JSON mapping
        // wants real booleans spelled `true`/`false` anyway. The budget is the module's
        // limits; events are at most two per node.
        let max_nodes = MAX_NODES.min(MAX_NODES_PER_BYTE * text.len() + 1024);
        let options = serde_saphyr::options! {
            with_snippet: false,
            strict_booleans: true,
            leading_zero_numbers_as_strings: true,
            budget: serde_saphyr::budget! {
                max_documents: MAX_DOCUMENTS,
                max_nodes: max_nodes,
                max_events: 2 * max_nodes + 2 * MAX_DOCUMENTS,
                max_depth: MAX_DEPTH,
                flow_nesting_limit: MAX_DEPTH,
                max_aliases: MAX_ALIASES,
                max_total_scalar_bytes: MAX_FILE_BYTES,
            },
        };
        serde_saphyr::from_multiple_with_options::<serde_saphyr::Spanned<Value>>(text, options)
            .map_err(|e| {
                let at = e
                    .location()
                    .map_or(FILE, |l| document_at(text, l.line() as usize));
                (format!("invalid YAML: {e}"), at)
            })?
            .into_iter()
            .map(|s| (s.value, usize::try_from(s.referenced.line()).unwrap_or(0)))
            .collect()
    };
    let documents: Vec<(Value, usize)> = roots
        .into_iter()
        .flat_map(|(root, line)| match root {
            Value::Array(items) => items.into_iter().map(|item| (item, 0)).collect(),
            Value::Null => Vec::new(),
            other => vec![(other, line)],
        })
        .collect();
    if documents.len() > MAX_DOCUMENTS {
        return Err((
            format!(
                "{} documents; the limit is {MAX_DOCUMENTS} per file",
                documents.len()
            ),
            FILE,
        ));
    }
    Ok(documents)
}

/// How deeply lists and mappings nest in `value` (a scalar is 0), without recursion.
fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        deepest = deepest.max(d + 1);
        stack.extend(children.map(|c| (c, d + 1)));
    }
    deepest
}

/// The YAML document that line `line` (1-based) of `text` is in, and the line it starts on:
/// documents are separated by `---` lines, and a `---` before any content opens the first.
fn document_at(text: &str, line: usize) -> Place {
    let mut document = 0;
    let mut start = 1;
    let mut content = false;
    for (i, l) in text.lines().enumerate().take(line.saturating_sub(1)) {
        let marker = l == "---" || l.starts_with("--- ") || l.starts_with("---\t");
        if marker {
            if content {
                document += 1;
            }
            content = true;
            start = i + 2;
        } else if !content && !l.trim().is_empty() && !l.trim_start().starts_with('#') {
            content = true;
        }
    }
    Place {
        document,
        line: start,
    }
}

/// The envelope as read: every part optional so that a missing one gets its own message.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvelope {
    kind: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    name: Option<String>,
    labels: Option<HashMap<String, Scalar>>,
    spec: Option<Value>,
}

/// A label value or name written as a YAML scalar: `version: 2` means the text "2".
#[derive(Deserialize)]
#[serde(untagged, expecting = "a string")]
enum Scalar {
    Text(String),
    Number(serde_json::Number),
    Bool(bool),
}

impl Scalar {
    fn into_text(self) -> String {
        match self {
            Scalar::Text(s) => s,
            Scalar::Number(n) => n.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

fn scalar_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Scalar>::deserialize(d)?.map(Scalar::into_text))
}

/// Decodes one document; the error is a field path and a message.
fn decode(document: Value) -> Result<Resource, (String, String)> {
    if !document.is_object() {
        return Err((
            String::new(),
            "expected a mapping with kind, name and spec".into(),
        ));
    }
    let raw: RawEnvelope = deserialize_at("", &document)?;
    let kind_name = raw.kind.ok_or_else(|| {
        (
            "kind".to_string(),
            format!("missing kind ({})", valid_kinds()),
        )
    })?;
    let kind = Kind::parse(&kind_name).ok_or_else(|| {
        (
            "kind".to_string(),
            format!("unknown kind {kind_name:?} ({})", valid_kinds()),
        )
    })?;
    let name = raw
        .name
        .ok_or_else(|| ("name".to_string(), "missing name".to_string()))?;
    let spec = raw
        .spec
        .ok_or_else(|| ("spec".to_string(), "missing spec".to_string()))?;
    Ok(Resource {
        name,
        labels: raw
            .labels
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_text()))
            .collect(),
        spec: Some(decode_spec(kind, &spec)?),
    })
}

fn valid_kinds() -> String {
    let names: Vec<_> = Kind::ALL.iter().map(|k| k.display_name()).collect();
    format!("valid kinds: {}", names.join(", "))
}

fn decode_spec(kind: Kind, spec: &Value) -> Result<Spec, (String, String)> {
    Ok(match kind {
        Kind::Listener => Spec::Listener(deserialize_at("spec", spec)?),
        Kind::RouteTable => Spec::RouteTable(deserialize_at("spec", spec)?),
        Kind::Cluster => Spec::Cluster(deserialize_at("spec", spec)?),
        Kind::Policy => Spec::Policy(deserialize_at("spec", spec)?),
        Kind::Consumer => Spec::Consumer(deserialize_at("spec", spec)?),
        Kind::Secret => Spec::Secret(
            deserialize_at("spec", spec)
                .map_err(|(field, message)| (field, redact_values(&message, spec)))?,
        ),
        Kind::Unspecified => {
            return Err(("kind".into(), format!("missing kind ({})", valid_kinds())));
        }
    })
}

/// `message` with every string of `spec` that it quotes replaced by [`REDACTED`]: a Secret's
/// material must not reach an error, and serde's messages quote what they found.
fn redact_values(message: &str, spec: &Value) -> String {
    fn strings<'v>(value: &'v Value, out: &mut Vec<&'v str>) {
        match value {
            Value::String(s) if !s.is_empty() => out.push(s),
            Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
            Value::Object(map) => map.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    strings(spec, &mut found);
    // Longest first, so a value inside another is not left half replaced.
    found.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut message = message.to_string();
    for s in found {
        message = message.replace(s, REDACTED);
        // serde_json quotes with escapes: "a\nb" for a value holding a newline.
        let escaped = Value::String(s.to_string()).to_string();
        let escaped = escaped.trim_matches('"');
        if escaped != s {
            message = message.replace(escaped, REDACTED);
        }
    }
    message
}

/// Deserializes `value`; an error names the field under `prefix` and, when the message does
/// not already show it, the value found there.
fn deserialize_at<T: serde::de::DeserializeOwned>(
    prefix: &str,
    value: &Value,
) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = path_string(prefix, e.path());
        let mut message = e.inner().to_string();
        if let Some(found) = value_at(value, e.path()).filter(|v| !v.is_object() && !v.is_array()) {
            let found = found.to_string();
            if !message.contains(&found) {
                message = format!("{message} (found {found})");
            }
        }
        (field, message)
    })
}

/// The value a serde path points to, when it points into `value`.
fn value_at<'v>(mut value: &'v Value, path: &serde_path_to_error::Path) -> Option<&'v Value> {
    use serde_path_to_error::Segment;
    for segment in path.iter() {
        value = match segment {
            Segment::Seq { index } => value.get(index)?,
            Segment::Map { key } => value.get(key)?,
            Segment::Enum { .. } => value,
            Segment::Unknown => return None,
        };
    }
    Some(value)
}

/// Joins a prefix and a serde path ("." when empty) into "spec.virtualHosts[0].domains".
fn path_string(prefix: &str, path: &serde_path_to_error::Path) -> String {
    let rest = path.to_string();
    match (prefix.is_empty(), rest == ".") {
        (_, true) => prefix.to_string(),
        (true, false) => rest,
        (false, false) if rest.starts_with('[') => format!("{prefix}{rest}"),
        (false, false) => format!("{prefix}.{rest}"),
    }
}

/// Reports each kind and name defined more than once, naming both places.
fn check_duplicates(loaded: &[Loaded], errors: &mut Vec<FileError>) {
    let mut first: HashMap<(Kind, &str), &Loaded> = HashMap::new();
    for l in loaded {
        let key = (l.resource.kind(), l.resource.name.as_str());
        match first.get(&key) {
            Some(prev) => errors.push(file_error(
                &l.path,
                Place {
                    document: l.document,
                    line: l.line,
                },
                "name",
                format!(
                    "{} is defined twice: also in {} document {}",
                    l.resource.key(),
                    prev.path.display(),
                    prev.document
                ),
            )),
            None => {
                first.insert(key, l);
            }
        }
    }
}

/// The envelope as written: fields in reading order, labels sorted and left out when empty.
#[derive(Serialize)]
struct Envelope<'a> {
    kind: &'static str,
    name: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spec: Option<SpecRef<'a>>,
}

impl<'a> Envelope<'a> {
    fn of(resource: &'a Resource) -> Self {
        Envelope {
            kind: resource.kind().display_name(),
            name: &resource.name,
            labels: resource
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            spec: resource.spec.as_ref().map(SpecRef),
        }
    }
}

/// Serializes the spec oneof as the bare message of its kind.
struct SpecRef<'a>(&'a Spec);

impl Serialize for SpecRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Spec::Listener(m) => m.serialize(serializer),
            Spec::RouteTable(m) => m.serialize(serializer),
            Spec::Cluster(m) => m.serialize(serializer),
            Spec::Policy(m) => m.serialize(serializer),
            Spec::Consumer(m) => m.serialize(serializer),
            Spec::Secret(m) => m.serialize(serializer),
        }
    }
}

/// Serializes an envelope value as `kind`, `name`, `labels`, `spec`, in that order; a JSON
/// map would sort them.
struct Ordered<'a>(&'a Value);

impl Serialize for Ordered<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Object(map) = self.0 else {
            return self.0.serialize(serializer);
        };
        const FIRST: [&str; 4] = ["kind", "name", "labels", "spec"];
        let mut out = serializer.serialize_map(None)?;
        for key in FIRST {
            if let Some(v) = map.get(key) {
                out.serialize_entry(key, v)?;
            }
        }
        out.end()
    }
}
