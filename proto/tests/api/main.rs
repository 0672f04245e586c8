//! Tests of the file format, references and validation through the public API.

mod file;
mod fixtures;
mod properties;
mod reference;
mod validate;
