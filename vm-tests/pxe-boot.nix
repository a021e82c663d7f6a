# A LAN like the operator's: a router handing out DHCP leases (and IPv6
# router advertisements, which iPXE waits for), a server running the module
# with PXE on, and disk-less QEMU machines created the way nixos/tests/boot.nix
# makeNetbootTest does, on the same VLAN. Verifies that:
# - an armed BIOS machine and an armed UEFI machine PXE-boot through the
#   module's proxy-DHCP/TFTP dnsmasq into iPXE, fetch their script from the
#   daemon, and are recorded as `pxe_booted` (or later);
# - a declared machine that is not armed (rebuild 0) gets no PXE answer and
#   stays `registered`.
# The install itself (stand-in installer, first boot, join) is exercised by
# the end-to-end tests in tests/e2e_*.rs.
{ self, pkgs }:
let
  inherit (pkgs) lib;
  # Its arguments changed over time ({ lib, pkgs } or { lib, stdenv }).
  qemu-common =
    let
      f = import "${pkgs.path}/nixos/lib/qemu-common.nix";
    in
    f (
      builtins.intersectAttrs (builtins.functionArgs f) {
        inherit lib pkgs;
        inherit (pkgs) stdenv;
      }
    );

  machines = {
    bios = {
      mac = "52:54:00:00:01:01";
      uefi = false;
    };
    uefi = {
      mac = "52:54:00:00:01:02";
      uefi = true;
    };
    idle = {
      mac = "52:54:00:00:01:03";
      uefi = false;
    };
  };

  # A disk-less machine on VLAN 1 whose only boot device is its NIC (with
  # QEMU's own iPXE option ROM, as on the CI machines).
  startCommand =
    { mac, uefi }:
    lib.concatStringsSep " " (
      [
        (qemu-common.qemuBinary pkgs.qemu_test)
        "-m 768"
        "-netdev vde,id=net0,sock=$QEMU_VDE_SOCKET_1"
        "-device virtio-net-pci,netdev=net0,mac=${mac}"
      ]
      ++ (
        if uefi then
          [
            "-drive if=pflash,format=raw,unit=0,readonly=on,file=${pkgs.OVMF.firmware}"
            "-drive if=pflash,format=raw,unit=1,readonly=on,file=${pkgs.OVMF.variables}"
          ]
        else
          [ "-boot order=n" ]
      )
    );

  # What the daemon hands to an armed machine. The assertions stop at
  # pxe_booted (the script was fetched), so a real kernel with a trivial
  # initrd is enough; the ISO is a placeholder with a known checksum.
  standInIso = "a stand-in for the prepared Proxmox VE ISO\n";
in
{
  name = "provisioning-pxe-boot";

  nodes.router =
    { lib, ... }:
    {
      virtualisation.vlans = [ 1 ];
      networking.firewall.enable = false;
      networking.interfaces.eth1 = {
        ipv4.addresses = lib.mkForce [
          {
            address = "10.0.0.1";
            prefixLength = 24;
          }
        ];
        ipv6.addresses = [
          {
            address = "fd00::1";
            prefixLength = 64;
          }
        ];
      };
      services.dnsmasq = {
        enable = true;
        resolveLocalQueries = false;
        settings = {
          port = 0;
          interface = "eth1";
          bind-interfaces = true;
          dhcp-range = [
            "10.0.0.100,10.0.0.199,1h"
            "::,constructor:eth1,ra-only"
          ];
          dhcp-option = [ "option:router,10.0.0.1" ];
          enable-ra = true;
          no-ping = true;
        };
      };
    };

  nodes.server =
    { lib, ... }:
    {
      imports = [ self.nixosModules.default ];

      virtualisation.vlans = [ 1 ];
      networking.interfaces.eth1.ipv4.addresses = lib.mkForce [
        {
          address = "10.0.0.2";
          prefixLength = 24;
        }
      ];

      services.provisioning = {
        enable = true;
        openFirewall = true;
        hosts = lib.mapAttrs (_: m: {
          inherit (m) mac;
          server-type = "qemu";
          rebuild = if m.mac == machines.idle.mac then 0 else 1;
        }) machines;
        serverTypes.qemu = {
          display_name = "QEMU test machine";
          boot_disk = "vda";
          management_nic = "eth0";
          gpu = false;
        };
        settings = {
          pxe = {
            enable = true;
            interface = "eth1";
            subnet = "10.0.0.0/24";
            server_address = "10.0.0.2";
          };
          proxmox = {
            kernel = "${pkgs.linuxPackages.kernel}/${pkgs.stdenv.hostPlatform.linux-kernel.target}";
            initrd = "${
              pkgs.makeInitrd {
                contents = [
                  {
                    object = pkgs.writeText "stand-in" standInIso;
                    symlink = "/stand-in";
                  }
                ];
              }
            }/initrd";
            iso = "${pkgs.writeText "stand-in.iso" standInIso}";
            iso_sha256 = builtins.hashString "sha256" standInIso;
          };
        };
      };

      environment.systemPackages = [ pkgs.jq ];
    };

  testScript = ''
    ${builtins.readFile ../nix/vm-test-status.py}

    start_all()
    router.wait_for_unit("dnsmasq.service")
    server.wait_for_unit("provisioning.service")
    server.wait_for_unit("provisioning-dnsmasq.service")
    wait_for_state("bios", ["pxe_ready"], timeout=60)
    wait_for_state("uefi", ["pxe_ready"], timeout=60)
    wait_for_state("idle", ["registered"], timeout=60)

    ${lib.concatStrings (
      lib.mapAttrsToList (name: m: ''
        ${name} = create_machine("${startCommand m}", name="${name}")
      '') machines
    )}

    after_boot = ["pxe_booted", "installing", "installed", "first_boot", "joining", "ready"]

    with subtest("an armed BIOS machine PXE-boots into iPXE and fetches its script"):
        bios.start()
        wait_for_state("bios", after_boot, timeout=300)

    with subtest("an armed UEFI machine PXE-boots into iPXE and fetches its script"):
        uefi.start()
        wait_for_state("uefi", after_boot, timeout=300)

    with subtest("a machine that is not armed gets no PXE answer"):
        idle.start()
        # Both armed machines needed well under this to fetch their scripts.
        server.sleep(60)
        wait_for_state("idle", ["registered"], timeout=10)
        server.fail("grep -rqi '${machines.idle.mac}' /run/provisioning/dnsmasq-hosts")
  '';
}
