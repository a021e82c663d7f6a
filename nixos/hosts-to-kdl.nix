# Renders host declarations written as Nix attribute sets into KDL 2.0 text,
# the format of hosts.d/*.kdl. It uses builtins only, so that it can be tested
# with a bare `nix-instantiate --eval --strict` (no nixpkgs needed).
#
# The mapping is deliberately schema-free: the daemon is the one place that
# knows which nodes a host may have and validates them (with file, line and
# column in its errors), so this file never has to follow schema changes.
#
#   attribute `a = v`     becomes child node `a`, by the type of v:
#     string, int, float  `a "v"`, `a 3`, `a 1.5`
#     bool                `a #true` / `a #false`
#     null, []            nothing (an unset option leaves no trace)
#     list of scalars     `a 1 2 3` (several arguments)
#     list of attrsets    one node `a` per element (a repeated node)
#     attrset             `a { ... }` (children); the reserved keys `_args`
#                         (list) and `_props` (attrset) give the node
#                         arguments and properties: `a "x" key="y" { ... }`
#
# Attribute names are node names verbatim (`server-type`, `wake-on-lan`: Nix
# allows `-` in identifiers). A host's `mac`, `server-type` and `rebuild` come
# first, in that order; every other attribute set is rendered sorted by name,
# so the output is deterministic.
let
  inherit (builtins)
    attrNames
    concatLists
    concatStringsSep
    elem
    filter
    fromJSON
    genList
    isAttrs
    isBool
    isFloat
    isInt
    isList
    isString
    map
    match
    removeAttrs
    replaceStrings
    substring
    toJSON
    typeOf
    ;

  hexDigit = n: substring n 1 "0123456789abcdef";
  hex = n: if n < 16 then hexDigit n else hex (n / 16) + hexDigit (n - 16 * (n / 16));

  # Code points that KDL 2.0 forbids in a document or treats as newlines
  # (which a single-line string may not contain literally): written as
  # \u{...} escapes. U+0000 cannot occur in a Nix string at all.
  unicodeEscaped = filter (c: !(elem c specialEscapes.codes)) (genList (i: i + 1) 31) ++ [
    127
    133
    8206
    8207
    8232
    8233
    8234
    8235
    8236
    8237
    8238
    8294
    8295
    8296
    8297
    65279
  ];

  # The JSON string escape `\uXXXX` for a code point below 0x10000.
  jsonChar =
    n:
    let
      h = hex n;
      padded = substring 0 (4 - (builtins.stringLength h)) "0000" + h;
    in
    fromJSON ''"\u${padded}"'';

  specialEscapes = {
    codes = [
      8
      9
      10
      12
      13
    ];
    from = [
      "\\"
      "\""
    ]
    ++ map jsonChar specialEscapes.codes;
    to = [
      "\\\\"
      "\\\""
      "\\b"
      "\\t"
      "\\n"
      "\\f"
      "\\r"
    ];
  };

  escapeFrom = specialEscapes.from ++ map jsonChar unicodeEscaped;
  escapeTo = specialEscapes.to ++ map (n: "\\u{${hex n}}") unicodeEscaped;

  reservedWords = [
    "true"
    "false"
    "null"
    "inf"
    "nan"
  ];

  isScalar = v: isString v || isInt v || isFloat v || isBool v || v == null;
in
rec {
  # A quoted KDL string with every character that needs it escaped.
  string = s: "\"" + replaceStrings escapeFrom escapeTo s + "\"";

  # A node or property name: bare when that is unambiguous, quoted otherwise.
  identifier =
    s: if match "[A-Za-z_][A-Za-z0-9_.-]*" s != null && !(elem s reservedWords) then s else string s;

  # One KDL value (argument or property value).
  value =
    v:
    if isString v then
      string v
    else if isBool v then
      (if v then "#true" else "#false")
    else if v == null then
      "#null"
    else if isInt v then
      toString v
    else if isFloat v then
      let
        s = toJSON v;
      in
      if match ".*[.eE].*" s != null then s else s + ".0"
    else
      throw "hosts-to-kdl: a ${typeOf v} cannot be a KDL value";

  # The lines of the node(s) that attribute `name = v` becomes, indented.
  nodeLines =
    indent: name: v:
    if v == null || v == [ ] then
      [ ]
    else if isScalar v then
      [ "${indent}${identifier name} ${value v}" ]
    else if isList v && builtins.all isScalar v then
      [ "${indent}${identifier name} ${concatStringsSep " " (map value v)}" ]
    else if isList v && builtins.all isAttrs v then
      concatLists (map (nodeLines indent name) v)
    else if isList v then
      throw "hosts-to-kdl: ${name}: a list must hold only scalars or only attribute sets"
    else if isAttrs v then
      let
        args = v._args or [ ];
        props = v._props or { };
        children = removeAttrs v [
          "_args"
          "_props"
        ];
        head = concatStringsSep " " (
          [ (identifier name) ]
          ++ map value args
          ++ map (k: "${identifier k}=${value props.${k}}") (attrNames props)
        );
        body = childLines "${indent}    " (attrNames children) children;
      in
      if body == [ ] then [ "${indent}${head}" ] else [ "${indent}${head} {" ] ++ body ++ [ "${indent}}" ]
    else
      throw "hosts-to-kdl: ${name}: a ${typeOf v} cannot be rendered as KDL";

  childLines =
    indent: names: attrs:
    concatLists (map (k: nodeLines indent k attrs.${k}) names);

  # The `host "name" { ... }` node for one declaration.
  host =
    name: attrs:
    let
      first = filter (k: attrs ? ${k}) [
        "mac"
        "server-type"
        "rebuild"
      ];
      rest = filter (k: !(elem k first)) (attrNames attrs);
      body = childLines "    " (first ++ rest) attrs;
    in
    concatStringsSep "\n" ([ "host ${string name} {" ] ++ body ++ [ "}" ]) + "\n";

  # A whole hosts.d file for one host, with a comment that says where it came
  # from (an operator who meets the store path in an error message must know
  # to change the Nix configuration, not the file).
  file =
    name: attrs:
    "// Generated from services.provisioning.hosts.${string name} by the NixOS module.\n"
    + "// Change the NixOS configuration, not this file.\n"
    + host name attrs;
}
