# The daemon, built with nixpkgs' rustPlatform from the repository's
# Cargo.lock (no vendor hash to maintain). Called by flake.nix through
# callPackage, and usable the same way without flakes.
{
  lib,
  rustPlatform,
  busybox,
  cmake,
  cpio,
  curl,
  shellcheck,
  xorriso,
  zstd,
}:
let
  cargoToml = lib.importTOML ../Cargo.toml;

  # The test suite runs in the build, except what the sandbox cannot give:
  # root (network namespaces), a system sshd, or files at Debian's paths
  # (/usr/sbin/dnsmasq, /usr/lib/ipxe). CI runs all of it (`.ci/run`), and
  # the NixOS VM tests (`vm-tests/`) cover the same scenarios with Nix.
  #
  # Whole files, left out of the build source so cargo never compiles them
  # (top level of tests/; keep in step with its file names):
  sandboxUnfitTests = [
    "e2e_.*[.]rs" # QEMU machines PXE-booting in network namespaces
    ".*_netns.*[.]rs" # anything else named for network namespaces
    "boot_infra_wol[.]rs" # magic packets across a veth between namespaces
    "join_ssh[.]rs" # the join against Debian's /usr/sbin/sshd
  ];
  # Single tests in files that otherwise run (`--skip` matches substrings):
  sandboxUnfitTestNames = [
    "real_dnsmasq_answers_declared_macs_in_a_namespace" # root, namespaces
    "real_dnsmasq_accepts_the_rendered_configs" # /usr/sbin/dnsmasq, /usr/lib/ipxe
  ];

  testsDir = ../tests;
  unfitTests =
    if builtins.pathExists testsDir then
      lib.fileset.unions (
        map (name: testsDir + "/${name}") (
          lib.filter (name: lib.any (re: builtins.match re name != null) sandboxUnfitTests) (
            lib.attrNames (builtins.readDir testsDir)
          )
        )
      )
    else
      lib.fileset.empty;

  # Everything the crate needs and nothing else: editing the Nix files, the
  # docs or CI scripts does not rebuild the package.
  notCrate = lib.fileset.unions (
    map lib.fileset.maybeMissing [
      ../.ci
      ../.git
      ../.github
      ../docs
      ../flake.lock
      ../flake.nix
      ../nix
      ../nixos
      ../result
      ../target
      ../vm-tests
    ]
  );
in
rustPlatform.buildRustPackage {
  pname = cargoToml.package.name;
  inherit (cargoToml.package) version;

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.difference ../. (lib.fileset.union notCrate unfitTests);
  };

  cargoLock.lockFile = ../Cargo.lock;

  # aws-lc-sys (through russh) may build its C code with CMake; the CMake
  # setup hook must not try to configure the crate itself.
  nativeBuildInputs = [ cmake ];
  dontUseCmakeConfigure = true;

  # Tools the tests find on PATH: busybox and curl for the pxe-init dry runs,
  # cpio to list the overlay archive, shellcheck for the shell scripts we
  # ship, xorriso and zstd for the ISO tests.
  nativeCheckInputs = [
    busybox
    cpio
    curl
    shellcheck
    xorriso
    zstd
  ];
  checkFlags = map (name: "--skip=${name}") sandboxUnfitTestNames;

  # Snapshots are reviewed in git; a mismatch fails instead of writing .snap.new.
  env.INSTA_UPDATE = "no";

  meta = {
    inherit (cargoToml.package) description;
    license = with lib.licenses; [
      mit
      asl20
    ];
    mainProgram = "provisioning";
    platforms = lib.platforms.linux;
  };
}
