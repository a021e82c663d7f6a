# Evaluates nixos/module.nix with nixpkgs' lib.evalModules, stub declarations
# of the NixOS options it sets and stub packages, and checks what it
# generates: the settings file contents, the units' settings, credentials,
# the firewall, and that the assertions catch what they must.
#
#   nix-instantiate --eval --strict nix/tests/module-eval.nix \
#     --arg lib 'import /path/to/nixpkgs/lib'
#
# prints `true`, or fails naming the check. No nixpkgs package is built or
# even evaluated: what stays unverified is listed in the README (NixOS section).
{ lib }:
let
  inherit (lib) mkOption types;

  # A store path that depends on its content, so that checks can recognise
  # what a stub derivation was made from.
  storePath =
    name: content:
    "${builtins.storeDir}/${builtins.substring 0 32 (builtins.hashString "sha256" content)}-${name}";

  fakePackage = name: {
    type = "derivation";
    inherit name;
    outPath = storePath name name;
    meta.mainProgram = name;
    override = _: fakePackage "${name}-overridden";
  };

  pkgs = {
    stdenv = rec {
      hostPlatform = {
        system = "x86_64-linux";
        isx86_64 = true;
      };
      buildPlatform = hostPlatform // {
        canExecute = _: true;
      };
    };
    coreutils = fakePackage "coreutils";
    dnsmasq = fakePackage "dnsmasq";
    ipxe = fakePackage "ipxe";
    writeText = name: text: {
      inherit name text;
      outPath = storePath name text;
    };
    runCommandLocal = name: _: script: {
      type = "derivation";
      inherit name script;
      outPath = storePath name script;
    };
    formats.yaml_1_2 = _: {
      # The shape of nixpkgs' YAML value type.
      type =
        let
          valueType =
            types.nullOr (
              types.oneOf [
                types.bool
                types.int
                types.float
                types.str
                types.path
                (types.attrsOf valueType)
                (types.listOf valueType)
              ]
            )
            // {
              description = "YAML value";
            };
        in
        valueType;
      generate = name: value: {
        inherit name value;
        outPath = storePath name (builtins.toJSON value);
      };
    };
  };

  utils.escapeSystemdPath =
    s: builtins.replaceStrings [ "/" "-" ] [ "-" "\\x2d" ] (lib.removePrefix "/" s);

  # The NixOS options the module sets, declared loosely.
  nixosStubs = {
    options = {
      assertions = mkOption {
        type = types.listOf types.unspecified;
        default = [ ];
      };
      warnings = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      meta = mkOption {
        type = types.lazyAttrsOf types.unspecified;
        default = { };
      };
      environment.etc = mkOption {
        type = types.attrsOf (types.submodule { options.source = mkOption { type = types.unspecified; }; });
        default = { };
      };
      environment.systemPackages = mkOption {
        type = types.listOf types.package;
        default = [ ];
      };
      systemd.services = mkOption {
        type = types.attrsOf (
          types.submodule {
            freeformType = types.attrsOf types.unspecified;
            options.serviceConfig = mkOption {
              type = types.attrsOf types.unspecified;
              default = { };
            };
          }
        );
        default = { };
      };
      networking.firewall.allowedTCPPorts = mkOption {
        type = types.listOf types.port;
        default = [ ];
      };
      networking.firewall.interfaces = mkOption {
        type = types.attrsOf (
          types.submodule {
            options.allowedUDPPorts = mkOption {
              type = types.listOf types.port;
              default = [ ];
            };
          }
        );
        default = { };
      };
    };
  };

  self.packages.x86_64-linux.default = fakePackage "provisioning";

  eval =
    settings:
    (lib.evalModules {
      modules = [
        nixosStubs
        (import ../../nixos/module.nix { inherit self; })
        { services.provisioning = settings; }
      ];
      specialArgs = { inherit pkgs utils; };
    }).config;

  failedAssertions = config: map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);

  # Every check: a name and a boolean, or a name and { actual, expected }.
  check =
    name: c:
    if builtins.isBool c then
      c || throw "module-eval: ${name}"
    else
      c.actual == c.expected
      || throw "module-eval: ${name}\n  expected: ${builtins.toJSON c.expected}\n  actual:   ${builtins.toJSON c.actual}";

  # A complete appliance: hosts in Nix, server types in Nix, PXE with the
  # external dnsmasq unit, every secret, the firewall open.
  full = eval {
    enable = true;
    openFirewall = true;
    hosts.pve-01 = {
      rebuild = 1;
      server-type = "minisforum-ms-01";
      mac = "58:47:ca:71:02:1e";
    };
    hosts.pve-02 = {
      mac = "58:47:ca:71:02:1f";
      server-type = "minisforum-ms-01";
      wake-on-lan = true;
    };
    serverTypes.minisforum-ms-01 = {
      display_name = "Minisforum MS-01";
      gpu = false;
    };
    rootPasswordHashFile = "/run/secrets/root-hash";
    joinPasswordFile = "/run/secrets/join";
    infrastructureTokenFile = "/run/secrets/infra";
    answerTokenFile = "/run/secrets/answer";
    settings = {
      pxe = {
        enable = true;
        interface = "enp1s0";
        subnet = "10.0.0.0/24";
        server_address = "10.0.0.2";
      };
      proxmox = {
        existing_node = "10.0.0.10";
        join_fingerprint = "AB:CD";
      };
      deadlines.installing = "90m";
      # A key the module does not know passes through.
      join.ssh_port = 2222;
    };
  };
  fullSettings = full.environment.etc."provisioning/provisioning.yaml".source.value;
  fullHostsDir = fullSettings.paths.hosts_dir;
  daemon = full.systemd.services.provisioning;
  dnsmasq = full.systemd.services.provisioning-dnsmasq;
  fullHosts = full.services.provisioning.renderedHosts;

  # A mutable hosts directory plus one Nix host, no PXE, no secrets.
  mixed = eval {
    enable = true;
    hostsDir = "/srv/hosts.d";
    hosts.pve-09 = {
      mac = "58:47:ca:71:02:99";
      server-type = "x";
    };
  };
  mixedSettings = mixed.environment.etc."provisioning/provisioning.yaml".source.value;

  spawn = eval {
    enable = true;
    settings.server.listen = "0.0.0.0:80";
    settings.pxe = {
      enable = true;
      dnsmasq = "spawn";
      interface = "br0";
      subnet = "10.1.0.0/16";
      server_address = "10.1.0.1";
    };
  };

  bad = eval {
    enable = true;
    rootPasswordHashFile = ./module-eval.nix;
    joinPasswordFile = "${builtins.storeDir}/abc-join";
    infrastructureTokenFile = "relative/token";
    hosts."Not_A_Label" = {
      mac = "58:47:ca:71:02:00";
      server-type = "x";
    };
    settings.pxe.enable = true;
  };

  checks = {
    "full: no failed assertions" = {
      actual = failedAssertions full;
      expected = [ ];
    };
    "full: settings file" = {
      actual = removeAttrs fullSettings [ "paths" ];
      expected = {
        server = {
          listen = "0.0.0.0:8080";
          public_url = "http://10.0.0.2:8080";
        };
        pxe = {
          enable = true;
          interface = "enp1s0";
          subnet = "10.0.0.0/24";
          server_address = "10.0.0.2";
          dnsmasq = "external";
          ipxe_dir = (pkgs.ipxe.override { }).outPath;
          dnsmasq_binary = "${pkgs.dnsmasq}/bin/dnsmasq";
          hostsdir = "/run/provisioning/dnsmasq-hosts";
          discover_unknown = false;
        };
        proxmox = {
          existing_node = "10.0.0.10";
          join_fingerprint = "AB:CD";
          join_password_file = "/run/credentials/provisioning.service/join-password";
          answer_token_file = "/run/credentials/provisioning.service/answer-token";
        };
        answer.root_password_hash_file = "/run/credentials/provisioning.service/root-password-hash";
        infrastructure = {
          server_type_map = { };
          token_file = "/run/credentials/provisioning.service/infrastructure-token";
        };
        deadlines.installing = "90m";
        join.ssh_port = 2222;
      };
    };
    "full: paths" = {
      actual = removeAttrs fullSettings.paths [ "hosts_dir" ];
      expected = {
        extra_hosts_dirs = [ ];
        server_types = storePath "server-types.yaml" (
          builtins.toJSON {
            server_types.minisforum-ms-01 = {
              display_name = "Minisforum MS-01";
              gpu = false;
            };
          }
        );
        state_dir = "/var/lib/provisioning";
      };
    };
    "full: hosts_dir is the rendered store directory" =
      lib.hasPrefix builtins.storeDir fullHostsDir && lib.hasSuffix "-provisioning-hosts.d" fullHostsDir;
    "full: the settings file is at the stable path the units use" =
      lib.hasInfix "--config /etc/provisioning/provisioning.yaml" daemon.serviceConfig.ExecStart;
    "full: credentials" = {
      actual = daemon.serviceConfig.LoadCredential;
      expected = [
        "root-password-hash:/run/secrets/root-hash"
        "join-password:/run/secrets/join"
        "answer-token:/run/secrets/answer"
        "infrastructure-token:/run/secrets/infra"
      ];
    };
    "full: daemon hardening" = {
      actual = {
        inherit (daemon.serviceConfig)
          Type
          DynamicUser
          ProtectSystem
          UMask
          CapabilityBoundingSet
          AmbientCapabilities
          StateDirectory
          NoNewPrivileges
          ;
      };
      expected = {
        Type = "notify";
        DynamicUser = true;
        ProtectSystem = "strict";
        UMask = "0077";
        CapabilityBoundingSet = [ "" ];
        AmbientCapabilities = [ ];
        StateDirectory = "provisioning";
        NoNewPrivileges = true;
      };
    };
    "full: watchdog" = daemon.serviceConfig.WatchdogSec == "30s";
    "full: reload is SIGHUP" = lib.hasSuffix "kill -HUP $MAINPID" daemon.serviceConfig.ExecReload;
    "full: settings changes reload" =
      daemon.reloadTriggers == [
        full.environment.etc."provisioning/provisioning.yaml".source
      ];
    "full: a listen address change restarts" = {
      actual = daemon.restartTriggers;
      expected = [ "0.0.0.0:8080" ];
    };
    "full: dnsmasq restarts on settings changes" = dnsmasq.restartTriggers == daemon.reloadTriggers;
    "full: dnsmasq is bound to the daemon" = {
      actual = {
        inherit (dnsmasq) bindsTo partOf wantedBy;
      };
      expected = {
        bindsTo = [ "provisioning.service" ];
        partOf = [ "provisioning.service" ];
        wantedBy = [ "provisioning.service" ];
      };
    };
    "full: dnsmasq waits for its interface" =
      lib.elem "sys-subsystem-net-devices-enp1s0.device" dnsmasq.after;
    "full: dnsmasq config rendered then tested" = {
      actual = dnsmasq.serviceConfig.ExecStartPre;
      expected = [
        "${self.packages.x86_64-linux.default}/bin/provisioning dnsmasq-config --config /etc/provisioning/provisioning.yaml --out /run/provisioning-dnsmasq/dnsmasq.conf"
        "${pkgs.dnsmasq}/bin/dnsmasq --test --conf-file=/run/provisioning-dnsmasq/dnsmasq.conf"
      ];
    };
    "full: dnsmasq shares the daemon's dynamic user" = {
      actual = {
        inherit (dnsmasq.serviceConfig) DynamicUser User Group;
      };
      expected = {
        inherit (daemon.serviceConfig) DynamicUser User Group;
      };
    };
    "full: dnsmasq capabilities" = {
      actual = {
        inherit (dnsmasq.serviceConfig) CapabilityBoundingSet AmbientCapabilities;
      };
      expected = rec {
        CapabilityBoundingSet = [
          "CAP_NET_BIND_SERVICE"
          "CAP_NET_RAW"
          "CAP_NET_ADMIN"
        ];
        AmbientCapabilities = CapabilityBoundingSet;
      };
    };
    "full: firewall" = {
      actual = {
        tcp = full.networking.firewall.allowedTCPPorts;
        udp = full.networking.firewall.interfaces.enp1s0.allowedUDPPorts;
      };
      expected = {
        tcp = [ 8080 ];
        udp = [
          67
          69
          4011
        ];
      };
    };
    "full: operators get the CLI" =
      full.environment.systemPackages == [ self.packages.x86_64-linux.default ];
    "full: hosts_dir is the rendered hosts" = fullHostsDir == fullHosts.outPath;
    # pve-01 is the renderer's golden case `minimal`: the file the module
    # puts into the directory is exactly that text.
    "full: each Nix host is one golden KDL file" =
      lib.hasInfix "cp ${storePath "pve-01.kdl" (builtins.readFile ./hosts-to-kdl/minimal.kdl)} $out/pve-01.kdl" fullHosts.script
      && lib.hasInfix "$out/pve-02.kdl" fullHosts.script;
    "full: the rendered hosts are checked against the Nix server types" =
      lib.hasInfix "/bin/provisioning check --server-types ${fullSettings.paths.server_types} $out" fullHosts.script;

    "mixed: hostsDir is primary, the Nix hosts are an extra directory" =
      mixedSettings.paths.hosts_dir == "/srv/hosts.d"
      && lib.length mixedSettings.paths.extra_hosts_dirs == 1
      && lib.hasSuffix "-provisioning-hosts.d" (lib.head mixedSettings.paths.extra_hosts_dirs);
    "mixed: no PXE keys but enable, no public_url, no secrets" = {
      actual = {
        inherit (mixedSettings) server pxe;
        credentials = mixed.systemd.services.provisioning.serviceConfig.LoadCredential;
      };
      expected = {
        server.listen = "127.0.0.1:8080";
        pxe = {
          enable = false;
          dnsmasq = "external";
          hostsdir = "/run/provisioning/dnsmasq-hosts";
          discover_unknown = false;
        };
        credentials = [ ];
      };
    };
    "mixed: no dnsmasq unit" = !(mixed.systemd.services ? provisioning-dnsmasq);
    "mixed: declarations are not checked at build time" =
      !mixed.services.provisioning.checkDeclarations;
    "full: declarations are checked at build time" = full.services.provisioning.checkDeclarations;

    "spawn: the daemon gets dnsmasq's capabilities and port 80" = {
      actual = spawn.systemd.services.provisioning.serviceConfig.CapabilityBoundingSet;
      expected = [
        "CAP_NET_BIND_SERVICE"
        "CAP_NET_RAW"
        "CAP_NET_ADMIN"
      ];
    };
    "spawn: raw sockets" =
      lib.elem "AF_PACKET" spawn.systemd.services.provisioning.serviceConfig.RestrictAddressFamilies;
    "spawn: no dnsmasq unit" = !(spawn.systemd.services ? provisioning-dnsmasq);
    "spawn: public_url follows the port" =
      spawn.environment.etc."provisioning/provisioning.yaml".source.value.server.public_url
      == "http://10.1.0.1:80";

    "bad: every mistake is caught" = {
      actual = lib.length (failedAssertions bad);
      expected = 5;
    };
  };
in
builtins.all (name: check name checks.${name}) (builtins.attrNames checks)
