//! Inputs for property tests: the valid fixtures with random edits, so that generated input
//! reaches deep into parsing, validation and compiling instead of failing at the first byte.
//!
//! Every edit is data (positions and values picked by proptest), applied by plain functions, so
//! a failing case shrinks to few small edits and replays the same way.

use portico_api::Resource;
use proptest::prelude::*;
use prost::Message;
use serde_json::Value;

/// The number of property-test cases CI runs per property.
pub const CASES: u32 = 10_000;

/// One edit of a byte string: at a position (modulo the length), replace, insert or delete.
#[derive(Clone, Debug)]
pub enum ByteEdit {
    /// Replace the byte there.
    Set(usize, u8),
    /// Insert a byte there.
    Insert(usize, u8),
    /// Delete the byte there.
    Delete(usize),
}

/// Up to `max` byte edits.
pub fn byte_edits(max: usize) -> impl Strategy<Value = Vec<ByteEdit>> {
    let edit = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| ByteEdit::Set(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| ByteEdit::Insert(i, b)),
        any::<usize>().prop_map(ByteEdit::Delete),
    ];
    proptest::collection::vec(edit, 0..=max)
}

/// `bytes` with `edits` applied in order.
pub fn edit_bytes(mut bytes: Vec<u8>, edits: &[ByteEdit]) -> Vec<u8> {
    for edit in edits {
        match *edit {
            ByteEdit::Set(i, b) if !bytes.is_empty() => {
                let at = i % bytes.len();
                bytes[at] = b;
            }
            ByteEdit::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
            ByteEdit::Delete(i) if !bytes.is_empty() => {
                let at = i % bytes.len();
                bytes.remove(at);
            }
            _ => {}
        }
    }
    bytes
}

/// A resource's protobuf encoding with `edits` applied.
pub fn edited_encoding(resource: &Resource, edits: &[ByteEdit]) -> Vec<u8> {
    edit_bytes(resource.encode_to_vec(), edits)
}

/// One edit of a JSON document: follow `path` (each step picks a child, modulo the number of
/// children) and replace what is there by `value`, or remove it.
#[derive(Clone, Debug)]
pub struct ValueEdit {
    /// The steps from the root.
    pub path: Vec<usize>,
    /// The new value; `None` removes the element.
    pub value: Option<Value>,
}

/// Values an edit writes: the shapes and edge values validation and compiling check.
pub fn edge_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![
            Just(0i64),
            Just(-1),
            Just(1),
            Just(65535),
            Just(65536),
            Just(i64::MAX),
            Just(i64::MIN),
            any::<i64>()
        ]
        .prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![
            Just(String::new()),
            Just("*".to_string()),
            Just("/".to_string()),
            Just("a".to_string()),
            Just("HTTP".to_string()),
            Just("HTTPS".to_string()),
            Just("10s".to_string()),
            Just("-1s".to_string()),
            Just("cart".to_string()),
            Just("web-cert".to_string()),
            Just("[".to_string()),
            Just("(a".to_string()),
            Just("*.example.com".to_string()),
            Just("::1".to_string()),
            ".{0,12}",
            "[a-z/.*%0-9-]{0,24}",
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-zA-Z_]{1,16}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Up to `max` edits of a JSON document.
pub fn value_edits(max: usize) -> impl Strategy<Value = Vec<ValueEdit>> {
    let edit = (
        proptest::collection::vec(any::<usize>(), 0..8),
        proptest::option::weighted(0.9, edge_value()),
    )
        .prop_map(|(path, value)| ValueEdit { path, value });
    proptest::collection::vec(edit, 0..=max)
}

/// `document` with `edits` applied in order.
pub fn edit_value(mut document: Value, edits: &[ValueEdit]) -> Value {
    for edit in edits {
        apply(&mut document, &edit.path, edit.value.clone());
    }
    document
}

fn apply(at: &mut Value, path: &[usize], value: Option<Value>) {
    let Some((step, rest)) = path.split_first() else {
        if let Some(v) = value {
            *at = v;
        }
        return;
    };
    match at {
        Value::Array(items) if !items.is_empty() => {
            let i = step % items.len();
            if rest.is_empty() && value.is_none() {
                items.remove(i);
            } else {
                apply(&mut items[i], rest, value);
            }
        }
        Value::Object(map) if !map.is_empty() => {
            let Some(key) = map.keys().nth(step % map.len()).cloned() else {
                return;
            };
            if rest.is_empty() && value.is_none() {
                map.remove(&key);
            } else if let Some(child) = map.get_mut(&key) {
                apply(child, rest, value);
            }
        }
        _ => {
            if let Some(v) = value {
                *at = v;
            }
        }
    }
}
