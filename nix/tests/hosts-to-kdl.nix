# Golden tests for nixos/hosts-to-kdl.nix, builtins only:
#
#   nix-instantiate --eval --strict nix/tests/hosts-to-kdl.nix
#
# prints `true` when every case renders exactly its expected file under
# hosts-to-kdl/, and fails with the case name and both texts otherwise.
let
  kdl = import ../../nixos/hosts-to-kdl.nix;

  # A control character made from its JSON escape (Nix string literals have
  # no escape for most of them).
  ctl = hex: builtins.fromJSON ''"\u00${hex}"'';

  cases = {
    # The minimum a host needs, in the order the daemon's docs show it.
    minimal = kdl.file "pve-01" {
      rebuild = 1;
      server-type = "minisforum-ms-01";
      mac = "58:47:ca:71:02:1e";
    };

    # The daemon's own schema (hosts.d/example.kdl), everything optional set.
    # This case, `minimal` and `schema-filter` decode without a diagnostic in
    # the daemon's KDL decoder (checked when they were written).
    schema = kdl.file "pve-example-02" {
      mac = "02-00-00-00-00-02";
      server-type = "minisforum-ms-01";
      rebuild = 0;
      wake-on-lan = true;
      network = {
        cidr = "192.168.1.22/24";
        gateway = "192.168.1.1";
        dns = [
          "192.168.1.1"
          "9.9.9.9"
        ];
      };
      disk = {
        filesystem = "zfs";
        disks = [
          "nvme0n1"
          "nvme1n1"
        ];
        raid = "raid1";
        ashift = 12;
        hdsize = 200;
      };
    };

    # Disks chosen by udev properties: `filter` holds one node per property.
    schema-filter = kdl.file "pve-example-03" {
      mac = "02:00:00:00:00:03";
      server-type = "generic-ext4";
      rebuild = 0;
      disk = {
        filter.ID_MODEL = "Samsung*";
        filter-match = "any";
        swapsize = 8;
      };
    };

    # Every value shape: nested children, several arguments, properties,
    # repeated nodes, booleans, floats, negative numbers; null and [] vanish.
    shapes = kdl.file "pve-02" {
      mac = "58-47-CA-71-02-1F";
      server-type = "ms-01";
      rebuild = 3;
      wake-on-lan = true;
      comment = null;
      tags = [ ];
      network = {
        cidr = "10.0.0.12/24";
        gateway = "10.0.0.1";
        dns = [
          "10.0.0.1"
          "9.9.9.9"
        ];
      };
      disk = {
        filesystem = "zfs";
        raid = "raid1";
        zfs-ashift = 12;
        hdsize = 100.0;
        swapsize = 1.5;
        offset = -2;
        filter = {
          _props = {
            ID_MODEL = "Samsung SSD*";
            ID_SERIAL = "S4*";
          };
        };
        filter-match = "all";
      };
      nic = [
        { _args = [ "enp1s0" ]; }
        {
          _args = [ "enp2s0" ];
          _props.mtu = 9000;
          vlan = 20;
        }
      ];
      flag = {
        _args = [
          false
          null
        ];
      };
    };

    # Strings that must be escaped, names that must be quoted.
    escaping = kdl.file "pve-03" {
      mac = "58:47:ca:71:02:20";
      note = "quote \" backslash \\ newline \n tab \t cr \r bell ${ctl "07"} del ${ctl "7f"} ${ctl "0b"}";
      "two words" = "x";
      "true" = "reserved word";
      "1st" = "starts with a digit";
      "a=b" = {
        _props."p q" = "r";
      };
      unicode = "Grüße — ✓";
    };
  };

  check =
    name:
    let
      expected = builtins.readFile (./hosts-to-kdl + "/${name}.kdl");
      actual = cases.${name};
    in
    actual == expected
    || throw "hosts-to-kdl: case ${name} differs\n--- expected\n${expected}--- actual\n${actual}";
in
builtins.all check (builtins.attrNames cases)
