# One server running the module, no PXE clients. Verifies that:
# - both units start (the daemon is Type=notify, so "active" means it said
#   READY=1) and the daemon's systemd security exposure stays low;
# - a host declared in Nix and one in the mutable hostsDir are both served,
#   and a file added to hostsDir is picked up without a restart;
# - a host declared in both places is an error that leaves the others alone;
# - an armed host's MAC reaches dnsmasq's dhcp-hostsdir, and dnsmasq listens
#   on the PXE ports of the PXE interface only;
# - secrets arrive as credentials: the settings hold only their paths;
# - `systemctl reload` (SIGHUP) and a restart keep every host's state.
{ self, pkgs }:
{
  name = "provisioning-module";

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

      # Stand-ins for secrets an operator would deploy with sops or agenix:
      # files outside the store, root-only, present before services start.
      system.activationScripts.provisioning-test-secrets = ''
        install -d -m 0700 /run/secrets
        printf 's3cret-join' > /run/secrets/join
        printf '$6$salt$hash' > /run/secrets/root-hash
        chmod 0600 /run/secrets/*
        install -d -m 0755 /srv/hosts.d
      '';

      services.provisioning = {
        enable = true;
        openFirewall = true;
        hostsDir = "/srv/hosts.d";
        hosts.pve-01 = {
          mac = "52:54:00:00:00:01";
          server-type = "qemu";
          rebuild = 1;
        };
        serverTypes.qemu = {
          display_name = "QEMU test machine";
          boot_disk = "vda";
          management_nic = "eth0";
          gpu = false;
        };
        joinPasswordFile = "/run/secrets/join";
        rootPasswordHashFile = "/run/secrets/root-hash";
        settings = {
          pxe = {
            enable = true;
            interface = "eth1";
            subnet = "10.0.0.0/24";
            server_address = "10.0.0.2";
          };
          proxmox = {
            existing_node = "10.0.0.10";
            join_fingerprint = "AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA";
          };
        };
      };

      environment.systemPackages = [
        pkgs.jq
        pkgs.iproute2
      ];
    };

  testScript = ''
    ${builtins.readFile ../nix/vm-test-status.py}

    server.wait_for_unit("provisioning.service")
    server.wait_for_unit("provisioning-dnsmasq.service")

    with subtest("the daemon is sandboxed"):
        server.succeed("systemd-analyze security provisioning.service --threshold=35 --no-pager")

    with subtest("a Nix-declared host is served and armed"):
        wait_for_state("pve-01", ["pxe_ready"])
        server.wait_until_succeeds("grep -rqi '52:54:00:00:00:01' /run/provisioning/dnsmasq-hosts")

    with subtest("dnsmasq listens for PXE clients on eth1"):
        server.wait_until_succeeds("ss -Hulpn 'sport = :67' | grep -q dnsmasq")
        server.succeed("ss -Hulpn 'sport = :4011' | grep -q dnsmasq")
        server.succeed("ss -Hulpn 'sport = :69' | grep dnsmasq | grep -q 10.0.0.2")

    with subtest("a file added to hostsDir is picked up without a restart"):
        pid = server.succeed("systemctl show -P MainPID provisioning").strip()
        server.succeed(
            "cat > /srv/hosts.d/pve-02.kdl <<'EOF'\n"
            'host "pve-02" {\n'
            '    mac "52:54:00:00:00:02"\n'
            '    server-type "qemu"\n'
            "    rebuild 0\n"
            "}\n"
            "EOF"
        )
        wait_for_state("pve-02", ["registered"])
        assert server.succeed("systemctl show -P MainPID provisioning").strip() == pid

    with subtest("a host declared twice is an error, the others stay"):
        server.succeed("sed 's/pve-02\"/pve-01\"/; s/00:02\"/00:03\"/' /srv/hosts.d/pve-02.kdl > /srv/hosts.d/dup.kdl")
        server.wait_until_succeeds("curl -sf http://127.0.0.1:8080/api/diagnostics | grep -q dup.kdl")
        wait_for_state("pve-01", ["pxe_ready"])
        wait_for_state("pve-02", ["registered"])
        server.succeed("rm /srv/hosts.d/dup.kdl")
        server.wait_until_fails("curl -sf http://127.0.0.1:8080/api/diagnostics | grep -q dup.kdl")

    with subtest("secrets are credentials, not settings"):
        settings = server.succeed("cat /etc/provisioning/provisioning.yaml")
        assert "/run/credentials/provisioning.service/join-password" in settings, settings
        assert "s3cret" not in settings

    with subtest("reload and restart keep every host's state"):
        before = host_states()
        server.succeed("systemctl reload provisioning")
        server.succeed("systemctl is-active provisioning")
        server.succeed("systemctl restart provisioning")
        server.wait_for_unit("provisioning.service")
        server.wait_for_unit("provisioning-dnsmasq.service")
        after = host_states()
        assert before == after, f"{before} != {after}"
  '';
}
