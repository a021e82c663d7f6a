# Stand-in for nixpkgs' nixos/lib/qemu-common.nix, for nix/tests/flake-outputs.nix.
{ pkgs, ... }:
{
  qemuBinary = qemu: "${qemu}/bin/qemu-system-${pkgs.stdenv.hostPlatform.qemuArch}";
}
