package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// The --json outputs are checked against docs/json-schema.json by this
// validator of the part of JSON Schema (2020-12) the file uses: type,
// properties, required, additionalProperties (false or a schema), items,
// enum, pattern, minimum, format date-time and local $ref. A keyword it does
// not know fails the test, so the schema cannot say more than is checked.

// jsonSchema is the parsed schema file.
type jsonSchema struct{ root map[string]any }

func loadSchema(t *testing.T) jsonSchema {
	t.Helper()
	raw, err := os.ReadFile("../../docs/json-schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var root map[string]any
	if err := json.Unmarshal(raw, &root); err != nil {
		t.Fatalf("docs/json-schema.json: %v", err)
	}
	return jsonSchema{root: root}
}

// check validates out, which must be exactly one JSON value, against the
// definition def ("put", "ls", ...), and returns the decoded value.
func (s jsonSchema) check(def, out string) (any, error) {
	dec := json.NewDecoder(strings.NewReader(out))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("more than one JSON value")
	}
	sch, err := s.ref("#/$defs/" + def)
	if err != nil {
		return nil, err
	}
	var errs []string
	s.validate(sch, v, "$", &errs)
	if len(errs) > 0 {
		return v, fmt.Errorf("does not match #/$defs/%s: %s", def, strings.Join(errs, "; "))
	}
	return v, nil
}

func (s jsonSchema) ref(r string) (map[string]any, error) {
	name, ok := strings.CutPrefix(r, "#/$defs/")
	defs, _ := s.root["$defs"].(map[string]any)
	sch, found := defs[name].(map[string]any)
	if !ok || !found {
		return nil, fmt.Errorf("schema has no %s", r)
	}
	return sch, nil
}

var rfc3339Re = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$`)

func (s jsonSchema) validate(sch map[string]any, v any, path string, errs *[]string) {
	fail := func(format string, a ...any) { *errs = append(*errs, path+": "+fmt.Sprintf(format, a...)) }
	keys := make([]string, 0, len(sch))
	for k := range sch {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		kw := sch[k]
		switch k {
		case "$ref":
			sub, err := s.ref(kw.(string))
			if err != nil {
				fail("%v", err)
				continue
			}
			s.validate(sub, v, path, errs)
		case "type":
			if !hasType(v, kw.(string)) {
				fail("want %s, got %s", kw, describe(v))
			}
		case "properties":
			obj, ok := v.(map[string]any)
			if !ok {
				continue
			}
			for name, sub := range kw.(map[string]any) {
				if fv, ok := obj[name]; ok {
					s.validate(sub.(map[string]any), fv, path+"."+name, errs)
				}
			}
		case "required":
			obj, ok := v.(map[string]any)
			if !ok {
				continue
			}
			for _, name := range kw.([]any) {
				if _, ok := obj[name.(string)]; !ok {
					fail("no %q", name)
				}
			}
		case "additionalProperties":
			obj, ok := v.(map[string]any)
			if !ok {
				continue
			}
			props, _ := sch["properties"].(map[string]any)
			for name, fv := range obj {
				if _, known := props[name]; known {
					continue
				}
				switch a := kw.(type) {
				case bool:
					if !a {
						fail("unknown field %q", name)
					}
				case map[string]any:
					s.validate(a, fv, path+"."+name, errs)
				}
			}
		case "items":
			arr, ok := v.([]any)
			if !ok {
				continue
			}
			for i, item := range arr {
				s.validate(kw.(map[string]any), item, fmt.Sprintf("%s[%d]", path, i), errs)
			}
		case "enum":
			found := false
			for _, e := range kw.([]any) {
				if e == v {
					found = true
				}
			}
			if !found {
				fail("%v is not one of %v", v, kw)
			}
		case "pattern":
			if str, ok := v.(string); ok && !regexp.MustCompile(kw.(string)).MatchString(str) {
				fail("%q does not match %s", str, kw)
			}
		case "minimum":
			if n, ok := v.(json.Number); ok {
				f, _ := n.Float64()
				if f < kw.(float64) {
					fail("%s is below %v", n, kw)
				}
			}
		case "format":
			str, ok := v.(string)
			if !ok || kw != "date-time" {
				continue
			}
			if _, err := time.Parse(time.RFC3339Nano, str); err != nil || !rfc3339Re.MatchString(str) {
				fail("%q is not an RFC 3339 date-time", str)
			}
		case "$schema", "$id", "title", "description", "$defs":
		default:
			fail("schema keyword %q is not checked by this test", k)
		}
	}
}

func hasType(v any, typ string) bool {
	switch typ {
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "number":
		_, ok := v.(json.Number)
		return ok
	case "integer":
		n, ok := v.(json.Number)
		return ok && !strings.ContainsAny(n.String(), ".eE")
	}
	return false
}

func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case json.Number:
		return "number " + v.String()
	case string:
		return fmt.Sprintf("string %q", v)
	}
	return fmt.Sprintf("%T", v)
}

// TestSchemaValidator: the validator refuses what protojson used to print
// (numbers as strings, base64 hashes, fields left out, unknown fields) and
// a second object, and takes the documented shape.
func TestSchemaValidator(t *testing.T) {
	s := loadSchema(t)
	good := `{"chunks_checked": 3, "under_replicated": 0, "copies_made": 0, "lost": 0}`
	tests := []struct {
		name, def, out string
		ok             bool
	}{
		{"documented", "repair", good, true},
		{"number as a string", "repair", `{"chunks_checked": "3", "under_replicated": 0, "copies_made": 0, "lost": 0}`, false},
		{"zero left out", "repair", `{"chunks_checked": 3}`, false},
		{"unknown field", "repair", `{"chunks_checked": 3, "under_replicated": 0, "copies_made": 0, "lost": 0, "chunksChecked": 3}`, false},
		{"two objects", "repair", good + "\n" + good, false},
		{"fraction for a count", "repair", `{"chunks_checked": 3.5, "under_replicated": 0, "copies_made": 0, "lost": 0}`, false},
		{"base64 hash", "get", `{"name":"a","path":"a","size":1,"blake3":"r1s7S8b9xZ/0n2J3w0X2wq4m1b0D2k0o1lq+2gXkqzE=","resumed_at_chunk":0,"kept_bytes":0,"bytes_received":1,"seconds":0.1}`, false},
		{"hex hash", "get", `{"name":"a","path":"a","size":1,"blake3":"` + strings.Repeat("ab", 32) + `","resumed_at_chunk":0,"kept_bytes":0,"bytes_received":1,"seconds":0.1}`, true},
		{"local time", "token_create", `{"token":"t","cluster":"A","name":"c","role":"read","prefix":"","expires":"2026-01-01T00:00:00+01:00"}`, false},
		{"UTC time", "token_create", `{"token":"t","cluster":"A","name":"c","role":"read","prefix":"","expires":"2026-01-01T00:00:00Z"}`, true},
		{"unknown role", "token_create", `{"token":"t","cluster":"A","name":"c","role":"root","prefix":"","expires":"2026-01-01T00:00:00Z"}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.check(tt.def, tt.out); (err == nil) != tt.ok {
				t.Fatalf("check(%s) = %v, want ok %v", tt.out, err, tt.ok)
			}
		})
	}
	// Every definition's required fields are its properties: no field is
	// optional, none undocumented.
	for name, d := range s.root["$defs"].(map[string]any) {
		def := d.(map[string]any)
		props, ok := def["properties"].(map[string]any)
		if !ok {
			continue
		}
		req, _ := def["required"].([]any)
		if len(req) != len(props) {
			t.Errorf("$defs/%s: %d properties, %d required", name, len(props), len(req))
		}
		if ap, ok := def["additionalProperties"]; !ok || ap != false {
			t.Errorf("$defs/%s: additionalProperties is not false", name)
		}
	}
	var buf bytes.Buffer
	json.Indent(&buf, []byte(good), "", "  ")
	if _, err := s.check("repair", buf.String()); err != nil {
		t.Fatal(err)
	}
}
