# The daemon, built with nixpkgs' rustPlatform from the repository's
# Cargo.lock (no vendor hash to maintain). Called by flake.nix through
# callPackage, and usable the same way without flakes.
{
  lib,
  rustPlatform,
  cmake,
  dnsmasq,
}:
let
  cargoToml = lib.importTOML ../Cargo.toml;

  # Integration tests that need root, network namespaces, QEMU or a real sshd
  # cannot run in the Nix build sandbox; they run in CI (`.ci/run`) and, on
  # machines with Nix, as NixOS VM tests (`vm-tests/`). Their files are left
  # out of the build source, so cargo never compiles them, whatever their test
  # functions are called. This is the one list of them: keep it in step with
  # the file names in tests/ (top level only).
  sandboxUnfitTests = [
    "e2e_.*[.]rs" # end-to-end: QEMU machines PXE-booting in network namespaces
    ".*_netns.*[.]rs" # anything else that creates network namespaces
    "join_.*[.]rs" # cluster join over SSH against a real sshd
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

  # Tests may check rendered dnsmasq configs with `dnsmasq --test`; the CI
  # machines have it installed, so the build sandbox provides it too.
  nativeCheckInputs = [ dnsmasq ];

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
