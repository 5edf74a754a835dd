//! Where a user's id is claimed and where a conversation lives: the deterministic rules every
//! region computes alike.
//!
//! - **Directory owner.** A user id is claimed, by its directory key (a keyed hash of the id),
//!   in one region of the deployment: the region with the highest SHA-256 of
//!   `key || region code` (rendezvous hashing). Adding a region moves only the keys it now
//!   wins.
//! - **Conversation home.** A one-to-one conversation lives in one region: the members'
//!   region when they share one; else the strict member's region when exactly one member's
//!   region is `strict`; else, when both regions are `open`, the region of the member whose
//!   id sorts first (the conversation id's first member). Two members of two different
//!   strict regions cannot share a conversation: `RESIDENCY_VIOLATION`.

use meridian_domain::{DirectoryKey, Reason, RegionCode, Rejection, UserId};
use sha2::{Digest, Sha256};

use crate::file::{RegionsFile, Residency};

/// The region whose directory holds `key`'s claim.
pub fn owner_region(file: &RegionsFile, key: &DirectoryKey) -> Option<RegionCode> {
    file.regions
        .iter()
        .max_by_key(|r| {
            let mut h = Sha256::new();
            h.update(key.as_str().as_bytes());
            h.update(b"/");
            h.update(r.code.as_bytes());
            <[u8; 32]>::from(h.finalize())
        })
        .and_then(|r| RegionCode::parse(&r.code).ok())
}

/// The residency policy of `region`.
pub fn policy(file: &RegionsFile, region: &RegionCode) -> Result<Residency, Rejection> {
    file.region(region.as_str()).map(|r| r.residency).ok_or_else(|| {
        Rejection::new(Reason::RegionNotServed, format!("region {region} is not in the deployment's topology"))
    })
}

/// The home region of the one-to-one conversation of `a` and `b`, given their home regions.
pub fn conversation_home(
    file: &RegionsFile,
    (a, a_home): (&UserId, &RegionCode),
    (b, b_home): (&UserId, &RegionCode),
) -> Result<RegionCode, Rejection> {
    if a_home == b_home {
        return Ok(a_home.clone());
    }
    // In id order, so that both members' sides give the same answer, word for word.
    let ((a, a_home), (b, b_home)) = if a <= b { ((a, a_home), (b, b_home)) } else { ((b, b_home), (a, a_home)) };
    match (policy(file, a_home)?, policy(file, b_home)?) {
        (Residency::Strict, Residency::Strict) => Err(Rejection::new(
            Reason::ResidencyViolation,
            format!(
                "{a} lives in {a_home} and {b} in {b_home}, both strict-residency regions: a conversation between \
                 them would store one side's messages outside its region"
            ),
        )),
        (Residency::Strict, Residency::Open) => Ok(a_home.clone()),
        (Residency::Open, Residency::Strict) => Ok(b_home.clone()),
        (Residency::Open, Residency::Open) => Ok(a_home.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> RegionsFile {
        let mut text = String::from("app = \"t\"\n");
        for (i, (code, residency)) in
            [("sg", "open"), ("kr", "open"), ("de", "strict"), ("in", "strict")].into_iter().enumerate()
        {
            text.push_str(&format!(
                "[[region]]\ncode = \"{code}\"\nresidency = \"{residency}\"\nshards = 2\n\
                 [[region.node]]\nid = 1\naddr = \"127.0.0.1:{}\"\npeer-addr = \"127.0.0.1:{}\"\nzone = \"a\"\n",
                1000 + i,
                2000 + i
            ));
        }
        RegionsFile::from_toml(&text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn r(code: &str) -> RegionCode {
        RegionCode::parse(code).unwrap_or_else(|e| panic!("{e}"))
    }

    fn u(id: &str) -> UserId {
        UserId::parse(id).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_residency_rule() {
        let f = file();
        let home = |a: &str, ah: &str, b: &str, bh: &str| {
            let (a, ah, b, bh) = (u(a), r(ah), u(b), r(bh));
            let one = conversation_home(&f, (&a, &ah), (&b, &bh));
            let other = conversation_home(&f, (&b, &bh), (&a, &ah));
            assert_eq!(one, other, "both sides compute the same home");
            one.map(|h| h.to_string()).map_err(|e| e.reason)
        };
        assert_eq!(home("amy", "sg", "bo", "sg"), Ok("sg".into()));
        assert_eq!(home("amy", "sg", "hans", "de"), Ok("de".into()));
        assert_eq!(home("zed", "kr", "hans", "de"), Ok("de".into()));
        assert_eq!(home("amy", "sg", "kim", "kr"), Ok("sg".into()), "open/open: the first id's region");
        assert_eq!(home("zoe", "sg", "kim", "kr"), Ok("kr".into()));
        assert_eq!(home("hans", "de", "ravi", "in"), Err(Reason::ResidencyViolation));
        assert_eq!(home("hans", "de", "ute", "de"), Ok("de".into()), "two residents of one strict region");
    }

    #[test]
    fn every_key_has_one_owner_among_the_regions() {
        let f = file();
        let mut owners = std::collections::BTreeMap::new();
        for i in 0..400u32 {
            let key =
                DirectoryKey::parse(&format!("{:064x}", u128::from(i) * 7919 + 13)).unwrap_or_else(|e| panic!("{e}"));
            let owner = owner_region(&f, &key).unwrap_or_else(|| panic!("no owner"));
            assert_eq!(owner_region(&f, &key), Some(owner.clone()), "stable");
            *owners.entry(owner.to_string()).or_insert(0) += 1;
        }
        assert_eq!(owners.len(), 4, "keys spread over every region: {owners:?}");
    }
}
