# The pxe-init overlay: the repository's overlay/ tree (embedded in the
# binary) packed into the CPIO archive that iPXE loads as a second initrd.
# It runs exactly the command the daemon and the tests use, so a Nix build
# and a test run produce the same bytes.
{ runCommand, provisioning }:
runCommand "pxe-init-overlay.cpio" { nativeBuildInputs = [ provisioning ]; } ''
  provisioning overlay build --out "$out"
''
