# `nix flake check`: the package (whose build runs the test suite), clippy,
# rustfmt, the Nix files' own lint, the builtins-only Nix tests, and every
# NixOS VM test under vm-tests/ (x86_64 only: the PXE clients are x86 BIOS
# and UEFI machines).
{ pkgs, self }:
let
  inherit (pkgs) lib;
  package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;

  vmTests =
    lib.mapAttrs'
      (file: _: {
        name = "vm-" + lib.removeSuffix ".nix" file;
        value = pkgs.testers.runNixOSTest (import (../vm-tests + "/${file}") { inherit self pkgs; });
      })
      (
        lib.filterAttrs (file: type: type == "regular" && lib.hasSuffix ".nix" file) (
          builtins.readDir ../vm-tests
        )
      );
in
{
  inherit package;

  pxe-init-overlay = self.packages.${pkgs.stdenv.hostPlatform.system}.pxe-init-overlay;

  # The crate's own build environment (vendored dependencies, offline), with
  # clippy instead of a build, over every target (the package's source
  # leaves out the tests that cannot run in the sandbox; clippy sees them).
  clippy = package.overrideAttrs (old: {
    pname = "${old.pname}-clippy";
    src = self;
    nativeBuildInputs = old.nativeBuildInputs ++ [ pkgs.clippy ];
    buildPhase = ''
      runHook preBuild
      cargo clippy --offline --all-targets -- -D warnings
      runHook postBuild
    '';
    doCheck = false;
    dontCargoInstall = true;
    installPhase = ''
      touch "$out"
    '';
  });

  fmt =
    pkgs.runCommand "provisioning-fmt"
      {
        nativeBuildInputs = [
          pkgs.cargo
          pkgs.rustfmt
        ];
      }
      ''
        export HOME="$TMPDIR"
        cd ${self}
        cargo fmt --check
        touch "$out"
      '';

  # The same Nix lint as .ci/nix-checks: formatted, no dead code.
  nix-lint =
    pkgs.runCommand "provisioning-nix-lint"
      {
        nativeBuildInputs = [
          pkgs.nixfmt
          pkgs.deadnix
        ];
      }
      ''
        cd ${self}
        find . -name '*.nix' -print0 | xargs -0 nixfmt --check
        deadnix --fail .
        touch "$out"
      '';

  # Evaluated, not built: the builtins-only renderer against its golden files.
  hosts-to-kdl =
    assert import ./tests/hosts-to-kdl.nix;
    pkgs.runCommand "provisioning-hosts-to-kdl" { } ''touch "$out"'';
}
// lib.optionalAttrs (pkgs.stdenv.hostPlatform.system == "x86_64-linux") vmTests
