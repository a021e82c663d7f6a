{
  description = "Provisioning: turns bare-metal machines into joined Proxmox VE cluster nodes";

  # nixos-unstable of 2026-10-01 (rustc 1.98; the crate needs 1.95).
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: {
        default = pkgs.callPackage ./nix/package.nix { };
        pxe-init-overlay = pkgs.callPackage ./nix/pxe-init-overlay.nix {
          provisioning = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };
      });

      overlays.default = final: _prev: {
        provisioning = final.callPackage ./nix/package.nix { };
      };

      # A function applied, not a bare path: Nix 2.8's flake check wants a
      # module value here, and the module takes the flake for its default
      # package.
      nixosModules.default = import ./nixos/module.nix { inherit self; };

      checks = forAllSystems (pkgs: import ./nix/checks.nix { inherit pkgs self; });

      formatter = forAllSystems (pkgs: pkgs.nixfmt);

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.stdenv.hostPlatform.system}.default ];
          packages = with pkgs; [
            cargo-nextest
            clippy
            rust-analyzer
            rustfmt
            # The end-to-end tests' tools, as on the CI machines.
            busybox
            cpio
            dnsmasq
            ipxe
            OVMF
            qemu
            # The Nix lint of .ci/nix-checks.
            deadnix
            nixfmt
          ];
        };
      });
    };
}
