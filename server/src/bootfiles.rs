//! The names of the boot files in rackseed's TFTP tree: the iPXE binaries and the
//! signed UEFI chain. DHCP offers them, TFTP serves them, the GRUB script points at
//! them; constants only.

/// The TFTP names of the iPXE binaries in rackseed's tree.
pub const IPXE_BIOS: &str = "undionly.kpxe";
pub const IPXE_EFI: &str = "ipxe.efi";
pub const IPXE_SNPONLY: &str = "snponly.efi";

/// The signed UEFI chain, where Debian's netboot package and GRUB's built-in prefix
/// put it: shim loads `grubx64.efi` from its own directory, GRUB reads
/// `grub/grub.cfg` there, which loads the machine's own file under `grub/rackseed/`.
pub const SHIM_EFI: &str = "debian-installer/amd64/bootnetx64.efi";
pub const GRUB_EFI: &str = "debian-installer/amd64/grubx64.efi";
pub const GRUB_CFG: &str = "debian-installer/amd64/grub/grub.cfg";
pub const GRUB_NODE_DIR: &str = "debian-installer/amd64/grub/rackseed/";
