//! Looking inside adapters: small dense linear algebra on the host, and (with the playground
//! issue) spectra and the memory ledger.

pub mod linalg;
