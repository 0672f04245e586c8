//! Size limits of config and of the Admin API, in one place: validation refuses what exceeds
//! them (naming the resource and field), the control plane pages and bounds its answers by
//! them, and clients size their gRPC limits from them. The README lists them.
//!
//! They follow from the store: etcd refuses requests over 1.5 MiB by default, so one resource
//! must fit in one store transaction with room to spare, and a history delta (a resource's
//! before and after) too. A change larger than one transaction is written in several behind
//! one config revision (see the control plane's `commit`), up to the change limits here.

/// Longest resource name: a DNS label.
pub const MAX_NAME_LEN: usize = 63;
/// Most labels on one resource.
pub const MAX_LABELS: usize = 64;
/// Longest label key, in bytes.
pub const MAX_LABEL_KEY_LEN: usize = 128;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE_LEN: usize = 256;
/// Largest resource, protobuf-encoded: its before and after together fit in one store
/// transaction with room to spare.
pub const MAX_RESOURCE_BYTES: usize = 512 * 1024;
/// Most resources one apply may name (applied and deleted together).
pub const MAX_CHANGE_RESOURCES: usize = 10_000;
/// Largest apply: the resources it applies, protobuf-encoded.
pub const MAX_CHANGE_BYTES: usize = 64 * 1024 * 1024;
/// Longest history message (`portico apply -m`), in bytes.
pub const MAX_MESSAGE_LEN: usize = 1024;
/// Most validation errors one apply response lists; the rest are counted.
pub const MAX_ERRORS: usize = 1_000;
/// Most bytes of resources in one page of a listing (a page holds at least one resource).
pub const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;
/// Largest request the control plane's Admin API accepts: an apply at its largest, with room
/// for its envelope.
pub const MAX_REQUEST_BYTES: usize = MAX_CHANGE_BYTES + 4 * 1024 * 1024;
/// Largest answer the Admin API sends, and what clients set as their receive limit. Listings,
/// history and apply answers are paged or bounded far below it; the agent registry and the
/// endpoint health grow with the fleet (about 1 KiB per agent).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// `n` bytes for people: "512 KiB", "4 MiB", "1.5 MiB", "300 bytes".
pub fn bytes(n: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    if n >= MIB {
        trimmed(n as f64 / MIB as f64, "MiB")
    } else if n >= KIB {
        trimmed(n as f64 / KIB as f64, "KiB")
    } else {
        format!("{n} bytes")
    }
}

fn trimmed(value: f64, unit: &str) -> String {
    let text = format!("{value:.1}");
    format!("{} {unit}", text.strip_suffix(".0").unwrap_or(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(bytes(MAX_RESOURCE_BYTES), "512 KiB");
        assert_eq!(bytes(MAX_PAGE_BYTES), "4 MiB");
        assert_eq!(bytes(1536 * 1024), "1.5 MiB");
        assert_eq!(bytes(300), "300 bytes");
    }
}
