// Command k8sschema turns Kubernetes' OpenAPI v2 document (swagger.json, as
// shipped in the k8s.io/kubernetes module at api/openapi-spec/) into
// standalone JSON schemas for kubeconform, offline:
//
//	k8sschema -in swagger.json -out DIR
//	kubeconform -strict -schema-location 'DIR/{{ .ResourceKind }}{{ .KindSuffix }}.json' ...
//
// One file per group-version-kind, named as kubeconform looks them up:
// <kind>-<first label of the group>-<version>.json (core: <kind>-<version>.json),
// e.g. deployment-apps-v1.json, service-v1.json, ingress-networking-v1.json.
//
// Each schema is standalone: every $ref is inlined (a type that contains
// itself, only apiextensions' JSONSchemaProps, becomes an open schema at the
// recursion). Objects refuse unknown fields (additionalProperties: false)
// unless marked x-kubernetes-preserve-unknown-fields, which is what makes
// kubeconform -strict catch a misspelt or misplaced key. IntOrString is
// "integer or string" and Quantity "number or string" (YAML writes `cpu: 1`
// as well as `cpu: 100m`). Fields accept null as the API server does (a
// chart that renders `annotations:` with nothing below sends null); the root
// does not, and pins apiVersion and kind. Descriptions are dropped.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

const (
	intOrString = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
	quantity    = "io.k8s.apimachinery.pkg.api.resource.Quantity"
)

type gvk struct{ Group, Version, Kind string }

type converter struct {
	defs map[string]map[string]any
}

func main() {
	in := flag.String("in", "", "swagger.json (OpenAPI v2) of Kubernetes")
	out := flag.String("out", "", "output directory")
	flag.Parse()
	if *in == "" || *out == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*in, *out); err != nil {
		fmt.Fprintln(os.Stderr, "k8sschema:", err)
		os.Exit(1)
	}
}

func run(in, out string) error {
	raw, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	var doc struct {
		Definitions map[string]map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	if len(doc.Definitions) == 0 {
		return fmt.Errorf("%s: no definitions", in)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	c := &converter{defs: doc.Definitions}
	names := make([]string, 0, len(doc.Definitions))
	for name := range doc.Definitions {
		names = append(names, name)
	}
	sort.Strings(names)
	written := map[string]string{} // file -> definition, to catch clashes
	for _, name := range names {
		def := doc.Definitions[name]
		for _, k := range gvks(def) {
			file := fileName(k)
			if prev, dup := written[file]; dup {
				// Two groups sharing a first label would map to one file;
				// kubeconform could not tell them apart either.
				fmt.Fprintf(os.Stderr, "k8sschema: %s: both %s and %s; keeping the first\n", file, prev, name)
				continue
			}
			s := c.convert(def, map[string]bool{name: true})
			s = rootOf(s, k)
			b, err := json.Marshal(s)
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(out, file), b, 0o644); err != nil {
				return err
			}
			written[file] = name
		}
	}
	if len(written) == 0 {
		return fmt.Errorf("%s: no definition carries x-kubernetes-group-version-kind", in)
	}
	fmt.Fprintf(os.Stderr, "k8sschema: %d schemas in %s\n", len(written), out)
	return nil
}

func gvks(def map[string]any) []gvk {
	list, _ := def["x-kubernetes-group-version-kind"].([]any)
	var ks []gvk
	for _, e := range list {
		m, _ := e.(map[string]any)
		g, _ := m["group"].(string)
		v, _ := m["version"].(string)
		k, _ := m["kind"].(string)
		if v != "" && k != "" {
			ks = append(ks, gvk{g, v, k})
		}
	}
	return ks
}

// fileName is kubeconform's {{ .ResourceKind }}{{ .KindSuffix }}.json.
func fileName(k gvk) string {
	name := strings.ToLower(k.Kind)
	if k.Group != "" {
		name += "-" + strings.ToLower(strings.Split(k.Group, ".")[0])
	}
	return name + "-" + strings.ToLower(k.Version) + ".json"
}

func apiVersion(k gvk) string {
	if k.Group == "" {
		return k.Version
	}
	return k.Group + "/" + k.Version
}

// rootOf makes the converted definition a document root: not nullable, and
// apiVersion/kind pinned to this group-version-kind.
func rootOf(s map[string]any, k gvk) map[string]any {
	s["$schema"] = "http://json-schema.org/draft-07/schema#"
	s["type"] = "object"
	props, _ := s["properties"].(map[string]any)
	if props == nil {
		props = map[string]any{}
		s["properties"] = props
	}
	props["apiVersion"] = map[string]any{"type": "string", "enum": []any{apiVersion(k)}}
	props["kind"] = map[string]any{"type": "string", "enum": []any{k.Kind}}
	return s
}

// convert returns the JSON schema for one OpenAPI v2 schema object, with
// every $ref inlined; seen holds the definitions on the current path.
func (c *converter) convert(in map[string]any, seen map[string]bool) map[string]any {
	if ref, ok := in["$ref"].(string); ok {
		name := strings.TrimPrefix(ref, "#/definitions/")
		switch name {
		case intOrString:
			return oneOf("integer", "string")
		case quantity:
			return oneOf("number", "string")
		}
		def, ok := c.defs[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "k8sschema: unresolved $ref %s: left open\n", ref)
			return map[string]any{}
		}
		if seen[name] {
			return map[string]any{} // recursion: open schema
		}
		seen[name] = true
		s := c.convert(def, seen)
		delete(seen, name)
		return s
	}
	if f, _ := in["format"].(string); f == "int-or-string" {
		return oneOf("integer", "string")
	}

	out := map[string]any{}
	preserve, _ := in["x-kubernetes-preserve-unknown-fields"].(bool)
	typ, _ := in["type"].(string)
	for key, v := range in {
		switch key {
		case "properties":
			props := map[string]any{}
			for name, p := range v.(map[string]any) {
				props[name] = c.convert(p.(map[string]any), seen)
			}
			out["properties"] = props
		case "items":
			if m, ok := v.(map[string]any); ok {
				out["items"] = c.convert(m, seen)
			}
		case "additionalProperties":
			if m, ok := v.(map[string]any); ok {
				out["additionalProperties"] = c.convert(m, seen)
			} else {
				out["additionalProperties"] = v
			}
		case "required", "enum", "minimum", "maximum", "minLength", "maxLength",
			"pattern", "minItems", "maxItems", "uniqueItems", "default":
			out[key] = v
		}
	}
	if typ == "" && out["properties"] != nil {
		typ = "object"
	}
	if typ == "object" && !preserve {
		if _, isMap := out["additionalProperties"]; !isMap {
			out["additionalProperties"] = false
		}
	}
	if preserve {
		delete(out, "additionalProperties")
	}
	if typ != "" {
		out["type"] = []any{typ, "null"}
	}
	return out
}

func oneOf(types ...string) map[string]any {
	alts := []any{}
	for _, t := range types {
		alts = append(alts, map[string]any{"type": t})
	}
	alts = append(alts, map[string]any{"type": "null"})
	return map[string]any{"oneOf": alts}
}
