//! The on-disk encoding of stored keys and of the change log.
//!
//! Hand-rolled little-endian records: the layout is small, fixed, and must never change
//! silently under a dependency upgrade. Every decode is bounds-checked and reports a truncated or
//! malformed record as an error, never a panic.

use crate::store::{Change, KeyValue, LeaseId, Revision};

/// A stored key's metadata and value, as kept in the key table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Record {
    pub create_revision: Revision,
    pub mod_revision: Revision,
    pub lease: Option<LeaseId>,
    pub value: Vec<u8>,
}

impl Record {
    pub fn into_key_value(self, key: String) -> KeyValue {
        KeyValue {
            key,
            value: self.value,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            lease: self.lease,
        }
    }
}

const PUT: u8 = 0;
const DELETE: u8 = 1;

pub(super) fn encode_record(record: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + record.value.len());
    out.extend_from_slice(&record.create_revision.to_le_bytes());
    out.extend_from_slice(&record.mod_revision.to_le_bytes());
    out.extend_from_slice(&record.lease.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&record.value);
    out
}

pub(super) fn decode_record(bytes: &[u8]) -> Result<Record, String> {
    let mut r = Reader(bytes);
    let create_revision = r.i64()?;
    let mod_revision = r.i64()?;
    let lease = r.lease()?;
    Ok(Record {
        create_revision,
        mod_revision,
        lease,
        value: r.0.to_vec(),
    })
}

/// The mod revision of an encoded record, without copying its value.
pub(super) fn mod_revision(bytes: &[u8]) -> Result<Revision, String> {
    let mut r = Reader(bytes);
    r.i64()?;
    r.i64()
}

/// Encodes the changes of one revision. The revision itself is the log's key, so it is not
/// repeated per change.
pub(super) fn encode_changes(changes: &[Change]) -> Vec<u8> {
    let mut out = Vec::new();
    put_len(&mut out, changes.len());
    for change in changes {
        match change {
            Change::Put(kv) => {
                out.push(PUT);
                put_bytes(&mut out, kv.key.as_bytes());
                out.extend_from_slice(&kv.create_revision.to_le_bytes());
                out.extend_from_slice(&kv.lease.unwrap_or(0).to_le_bytes());
                put_bytes(&mut out, &kv.value);
            }
            Change::Delete { key, .. } => {
                out.push(DELETE);
                put_bytes(&mut out, key.as_bytes());
            }
        }
    }
    out
}

pub(super) fn decode_changes(revision: Revision, bytes: &[u8]) -> Result<Vec<Change>, String> {
    let mut r = Reader(bytes);
    let count = r.len()?;
    let mut changes = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let tag = r.u8()?;
        let key = r.string()?;
        changes.push(match tag {
            PUT => {
                let create_revision = r.i64()?;
                let lease = r.lease()?;
                let value = r.bytes()?.to_vec();
                Change::Put(KeyValue {
                    key,
                    value,
                    create_revision,
                    mod_revision: revision,
                    lease,
                })
            }
            DELETE => Change::Delete { key, revision },
            other => return Err(format!("unknown change kind {other}")),
        });
    }
    if !r.0.is_empty() {
        return Err(format!("{} trailing bytes", r.0.len()));
    }
    Ok(changes)
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    // Keys and values are bounded far below 4 GiB by the callers (etcd's own request limit is
    // 1.5 MiB), so the conversion cannot truncate in practice; saturate rather than wrap.
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// A cursor over a record that fails instead of reading past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!("truncated: need {n} bytes, have {}", self.0.len()));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn i64(&mut self) -> Result<i64, String> {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(self.take(8)?);
        Ok(i64::from_le_bytes(buf))
    }

    fn len(&mut self) -> Result<usize, String> {
        let mut buf = [0u8; 4];
        buf.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(buf) as usize)
    }

    fn lease(&mut self) -> Result<Option<LeaseId>, String> {
        Ok(Some(self.i64()?).filter(|id| *id != 0))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = self.len()?;
        self.take(len)
    }

    fn string(&mut self) -> Result<String, String> {
        let bytes = self.bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "key is not UTF-8".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        for lease in [None, Some(7)] {
            let record = Record {
                create_revision: 3,
                mod_revision: 9,
                lease,
                value: b"v".to_vec(),
            };
            let bytes = encode_record(&record);
            assert_eq!(mod_revision(&bytes), Ok(9));
            assert_eq!(decode_record(&bytes), Ok(record));
        }
    }

    #[test]
    fn changes_round_trip() {
        let changes = vec![
            Change::Put(KeyValue {
                key: "a".into(),
                value: vec![1, 2],
                create_revision: 4,
                mod_revision: 5,
                lease: Some(2),
            }),
            Change::Delete {
                key: "b".into(),
                revision: 5,
            },
        ];
        assert_eq!(decode_changes(5, &encode_changes(&changes)), Ok(changes));
    }

    #[test]
    fn truncated_input_is_an_error() {
        let bytes = encode_changes(&[Change::Delete {
            key: "key".into(),
            revision: 1,
        }]);
        for cut in 0..bytes.len() {
            assert!(decode_changes(1, &bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode_record(&[0; 23]).is_err());
    }
}
