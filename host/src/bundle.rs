//! The bundle format: a manifest (`bundle.toml`), rule components and data, packed into a
//! `.tar.gz` and signed. Loaded, a bundle ([`Bundle`]) is verified, compiled
//! and evaluated as a dependency graph whose decisions combine into one verdict.

pub(crate) mod evaluate;
pub(crate) mod golden;
mod load;
pub(crate) mod loaded;
mod manifest;
mod pack;
mod signing;
mod source;

// What a loaded bundle is and does: public at the crate root only (one path per type).
pub(crate) use evaluate::{BundleResult, Overloaded};
pub(crate) use loaded::{Bundle, BundleError, BundleRule, LoadOptions, LoadStep};

// The bundle format: manifests, files, signatures, packing.
pub use manifest::{
    BundleSection, Combine, GrantSection, MANIFEST_FORMAT, Manifest, ManifestError, OnError,
    RuleSection, TestCase,
};
pub use pack::{pack, sign, write_archive};
pub use signing::{SecretKey, SignatureEntry, SignatureError, SignatureFile, TrustedKey, verify};
pub use source::{BundleSource, MANIFEST_FILE, SIGNATURE_FILE, SourceError, SourceLimits};
