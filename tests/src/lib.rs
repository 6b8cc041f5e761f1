//! The rackseed test harness: network namespaces, the real `rackseed` binary, real
//! clients and QEMU nodes.
