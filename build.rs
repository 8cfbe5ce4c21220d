//! Build script: the `o200k_base` vocabulary written out once, at build
//! time, in the form the usage counter reads in place
//! (src/adapters/outbound/o200k/vocabulary.rs): every ordinary token's bytes
//! in rank order, and where each one starts.
//!
//! The vocabulary comes from `tiktoken-rs`, which ships it (a build
//! dependency only: nothing is downloaded, at build time or at run time).
//! Read at run time instead, it cost the server ~15 MiB resident: the
//! crate's encoder built and dropped at start-up, its 3.6 MB base64 file
//! paged in, and a hash map of slices; in this form it is 2.2 MB of the
//! binary's read-only data, paged in as counting touches it.

use std::path::PathBuf;

/// `o200k_base`'s ordinary tokens have the ranks 0..ORDINARY, one each;
/// its special tokens (199 999, 200 018) are not text and are left out.
const ORDINARY: u32 = 199_998;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let encoder = tiktoken_rs::o200k_base().expect("tiktoken-rs's own o200k_base file");
    let special = encoder.special_tokens();
    let mut bytes: Vec<u8> = Vec::with_capacity(1_500_000);
    let mut starts: Vec<u8> = Vec::with_capacity(4 * (ORDINARY as usize + 1));
    for rank in 0..ORDINARY {
        let token = encoder
            .decode_bytes(&[rank])
            .expect("o200k_base's ordinary ranks are consecutive");
        assert!(
            std::str::from_utf8(&token).map_or(true, |s| !special.contains(s)),
            "rank {rank} is a special token"
        );
        starts.extend_from_slice(&u32::try_from(bytes.len()).unwrap().to_le_bytes());
        bytes.extend_from_slice(&token);
    }
    starts.extend_from_slice(&u32::try_from(bytes.len()).unwrap().to_le_bytes());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("o200k_base.bytes"), &bytes).expect("writable OUT_DIR");
    std::fs::write(out.join("o200k_base.starts"), &starts).expect("writable OUT_DIR");
}
