# Evaluates flake.nix's outputs against a stub nixpkgs (nixpkgs' real lib,
# stub packages) and checks their shape: the attributes `nix flake check`
# looks at, per system, and that every vm-tests/*.nix file is a check that
# hands runNixOSTest a test with nodes and a script.
#
#   nix-instantiate --eval --strict nix/tests/flake-outputs.nix \
#     --arg lib 'import /path/to/nixpkgs/lib'
#
# prints `true`, or fails naming the check. Nothing is built.
{ lib }:
let
  fake = name: {
    type = "derivation";
    inherit name;
    outPath = "${builtins.storeDir}/00000000000000000000000000000000-${name}";
    overrideAttrs = _: fake "${name}-overridden";
  };

  stubPkgs = system: {
    inherit lib;
    stdenv.hostPlatform = {
      inherit system;
      isx86_64 = system == "x86_64-linux";
      qemuArch = lib.head (lib.splitString "-" system);
    };
    # A string, not a path: interpolating a path would copy it to the store.
    path = toString ./stub-nixpkgs;
    OVMF = {
      firmware = "OVMF_CODE.fd";
      variables = "OVMF_VARS.fd";
    };
    qemu_test = fake "qemu";
    callPackage = fn: _: fake (baseNameOf (toString fn));
    runCommand =
      name: _: _:
      fake name;
    mkShell = args: fake "shell" // { inherit args; };
    testers.runNixOSTest = test: fake "vm-test-${test.name}" // { inherit test; };
    nixfmt = fake "nixfmt";
    deadnix = fake "deadnix";
    cargo = fake "cargo";
    rustfmt = fake "rustfmt";
    clippy = fake "clippy";
  };

  nixpkgs = {
    inherit lib;
    legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (
      system: lib.genAttrs packagesInShell fake // stubPkgs system
    );
  };
  packagesInShell = [
    "cargo-nextest"
    "rust-analyzer"
    "busybox"
    "cpio"
    "dnsmasq"
    "ipxe"
    "OVMF"
    "qemu"
  ];

  flake = import ../../flake.nix;
  self = flake.outputs { inherit self nixpkgs; } // {
    outPath = toString ../..;
  };

  vmTests = lib.sort lib.lessThan (
    map (f: "vm-" + lib.removeSuffix ".nix" f) (
      lib.attrNames (
        lib.filterAttrs (f: t: t == "regular" && lib.hasSuffix ".nix" f) (builtins.readDir ../../vm-tests)
      )
    )
  );

  check = name: c: c || throw "flake-outputs: ${name}";

  checks = {
    "inputs: nixpkgs only" = lib.attrNames flake.inputs == [ "nixpkgs" ];
    "packages per system" = lib.all (
      s:
      lib.attrNames self.packages.${s} == [
        "default"
        "pxe-init-overlay"
      ]
    ) (lib.attrNames nixpkgs.legacyPackages);
    "package from nix/package.nix" = self.packages.x86_64-linux.default.name == "package.nix";
    "overlay adds pkgs.provisioning" =
      lib.attrNames (self.overlays.default (stubPkgs "x86_64-linux") { }) == [ "provisioning" ];
    "nixosModules.default is a module function, not a path" =
      builtins.isFunction self.nixosModules.default
      && builtins.functionArgs self.nixosModules.default ? config;
    "formatter per system" = lib.all (s: self.formatter.${s}.name == "nixfmt") (
      lib.attrNames nixpkgs.legacyPackages
    );
    "devShell per system" = lib.all (s: self.devShells.${s}.default.name == "shell") (
      lib.attrNames nixpkgs.legacyPackages
    );
    "x86_64 checks: package, overlay, lints, Nix tests and every VM test" =
      lib.attrNames self.checks.x86_64-linux == lib.sort lib.lessThan (
        [
          "clippy"
          "fmt"
          "hosts-to-kdl"
          "nix-lint"
          "package"
          "pxe-init-overlay"
        ]
        ++ vmTests
      );
    "aarch64 checks: no VM tests (the PXE clients are x86)" =
      lib.attrNames self.checks.aarch64-linux == [
        "clippy"
        "fmt"
        "hosts-to-kdl"
        "nix-lint"
        "package"
        "pxe-init-overlay"
      ];
    "VM tests have a name, nodes and a script" = lib.all (
      t:
      let
        test = self.checks.x86_64-linux.${t}.test;
      in
      lib.isString test.name && test.nodes != { } && lib.isString test.testScript
    ) vmTests;
  };
in
builtins.all (name: check name checks.${name}) (builtins.attrNames checks)
