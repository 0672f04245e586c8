//! Resource files on the command line: loading them, and tracing an error the server reports
//! for a resource back to the file and document it came from.

use std::collections::HashMap;
use std::path::PathBuf;

use portico_api::file::{self, Loaded};
use portico_api::pb::{Kind, Resource, ValidationError};
use serde::Serialize;

use crate::error::{CliError, CliResult};

/// The `-f FILE|DIR` option of `apply` and `diff`.
#[derive(Debug, clap::Args)]
pub struct FileArgs {
    /// A resource file (YAML or JSON) or a directory of them; repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR",
        required = true
    )]
    pub files: Vec<PathBuf>,
}

/// The resources of the files named with `-f`, in file order.
pub struct Files {
    loaded: Vec<Loaded>,
    /// Index into `loaded` by kind and name.
    origin: HashMap<(Kind, String), usize>,
}

/// One validation error with where it came from, as printed and as rendered to JSON/YAML.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The file, when the resource came from one.
    pub path: Option<String>,
    /// The document's index in the file (0-based), when the resource came from a file.
    pub document: Option<usize>,
    /// The line the document starts on (1-based), when known.
    pub line: Option<usize>,
    /// The resource's kind, when known.
    pub kind: Option<String>,
    /// The resource's name, when known.
    pub name: Option<String>,
    /// Path of the field at fault (empty: the resource or document as a whole).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let (Some(path), Some(doc)) = (&self.path, self.document) {
            write!(f, "{path}: document {doc}")?;
            if let Some(line) = self.line {
                write!(f, " (line {line})")?;
            }
            f.write_str(": ")?;
        }
        if let (Some(kind), Some(name)) = (&self.kind, &self.name) {
            write!(f, "{kind}/{name}: ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

impl From<file::FileError> for FieldError {
    fn from(e: file::FileError) -> FieldError {
        FieldError {
            path: Some(e.path),
            document: Some(e.document),
            line: (e.line > 0).then_some(e.line),
            kind: None,
            name: None,
            field: e.field,
            message: e.message,
        }
    }
}

impl Files {
    /// Loads every file and directory. A file or directory that cannot be read at all is a
    /// local failure (exit 1); errors in what was read are validation failures (the inner
    /// `Err`, exit 4), every one of them.
    pub fn load(paths: &[PathBuf]) -> CliResult<Result<Files, Vec<FieldError>>> {
        let errors = match file::load_paths(paths) {
            Ok(loaded) => {
                let origin = loaded
                    .iter()
                    .enumerate()
                    .map(|(i, l)| ((l.resource.kind(), l.resource.name.clone()), i))
                    .collect();
                return Ok(Ok(Files { loaded, origin }));
            }
            Err(errors) => errors,
        };
        let unreadable: Vec<String> = errors
            .iter()
            .filter(|e| e.unreadable)
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect();
        if !unreadable.is_empty() {
            return Err(CliError::File(unreadable.join("; ")));
        }
        Ok(Err(errors.into_iter().map(FieldError::from).collect()))
    }

    /// The loaded resources with their origin.
    pub fn loaded(&self) -> &[Loaded] {
        &self.loaded
    }

    /// The resources, in file order.
    pub fn resources(&self) -> Vec<Resource> {
        self.loaded.iter().map(|l| l.resource.clone()).collect()
    }

    /// Whether a resource of this kind and name is in the files.
    pub fn contains(&self, kind: Kind, name: &str) -> bool {
        self.origin.contains_key(&(kind, name.to_string()))
    }

    /// A server-side validation error, with the file and document of its resource.
    pub fn locate(&self, e: &ValidationError) -> FieldError {
        let key = e.key.clone().unwrap_or_default();
        let origin = self
            .origin
            .get(&(key.kind(), key.name.clone()))
            .and_then(|i| self.loaded.get(*i));
        FieldError {
            path: origin.map(|l| l.path.display().to_string()),
            document: origin.map(|l| l.document),
            line: origin.map(|l| l.line).filter(|l| *l > 0),
            kind: e.key.as_ref().map(|k| k.kind().display_name().to_string()),
            name: e.key.as_ref().map(|k| k.name.clone()),
            field: e.field.clone(),
            message: e.message.clone(),
        }
    }
}

/// The failure for a list of validation errors.
pub fn validation_failed(errors: &[FieldError]) -> CliError {
    CliError::Validation(errors.iter().map(ToString::to_string).collect())
}

/// Loads files, turning errors in them straight into a validation failure.
pub fn load_or_fail(paths: &[PathBuf]) -> CliResult<Files> {
    Files::load(paths)?.map_err(|errors| validation_failed(&errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_errors_name_file_document_resource_and_field() {
        let e = FieldError {
            path: Some("routes.yaml".into()),
            document: Some(1),
            line: Some(12),
            kind: Some("RouteTable".into()),
            name: Some("shop".into()),
            field: "virtual_hosts[0].routes[2].action.cluster".into(),
            message: "cluster \"cart\" does not exist".into(),
        };
        assert_eq!(
            e.to_string(),
            "routes.yaml: document 1 (line 12): RouteTable/shop: \
             virtual_hosts[0].routes[2].action.cluster: cluster \"cart\" does not exist"
        );
    }

    #[test]
    fn field_errors_without_origin_or_field_stay_readable() {
        let e = FieldError {
            path: None,
            document: None,
            line: None,
            kind: Some("Cluster".into()),
            name: Some("web".into()),
            field: String::new(),
            message: "is still referenced".into(),
        };
        assert_eq!(e.to_string(), "Cluster/web: is still referenced");
    }
}
