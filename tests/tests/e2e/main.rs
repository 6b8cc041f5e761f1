//! End-to-end tests of rackseed: one test binary, one module per tier or part.
//!
//! Every test builds its own network namespaces (addresses from the documentation
//! ranges only) and removes them when it ends. QEMU tests take turns
//! (`rackseed_tests::qemu::exclusive`).

mod backup;
mod bench;
mod boot;
mod cli;
mod commission;
mod console;
mod firstboot;
mod health;
mod images;
mod package;
mod postgres;
mod power;
mod profile;
mod protocol;
mod vagrant;
