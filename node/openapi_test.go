package node

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/goccy/go-yaml"
)

// openAPIDoc is the part of the OpenAPI description the tests check. It is
// parsed with goccy/go-yaml, which gin already requires (go.mod lists it):
// gopkg.in/yaml.v3 is only in go.sum, and importing it would change go.mod.
type openAPIDoc struct {
	OpenAPI string `yaml:"openapi"`
	Info    struct {
		Title   string `yaml:"title"`
		Version string `yaml:"version"`
	} `yaml:"info"`
	Paths map[string]map[string]any `yaml:"paths"`
}

// typedEvents are the events served by POST /users/:userId/events/:event.
var typedEvents = []string{EventNewMessage, EventMessageStatusUpdate, EventUnreadCountUpdate, EventConversationUpdate, EventError}

func parseOpenAPI(t *testing.T) openAPIDoc {
	t.Helper()
	var doc openAPIDoc
	if err := yaml.Unmarshal(openAPISpec, &doc); err != nil {
		t.Fatalf("openapi.yaml does not parse: %v", err)
	}
	return doc
}

// specOperations returns "METHOD /path" for every operation of the description.
func specOperations(doc openAPIDoc) []string {
	var ops []string
	for path, item := range doc.Paths {
		for key := range item {
			switch key {
			case "get", "put", "post", "delete", "options", "head", "patch", "trace":
				ops = append(ops, strings.ToUpper(key)+" "+path)
			}
		}
	}
	slices.Sort(ops)
	return ops
}

// routedOperations returns "METHOD /path" for every gin route under /api/v1
// and /health, in OpenAPI's path syntax, with :event expanded to the typed events.
func routedOperations(t *testing.T, r *gin.Engine) []string {
	t.Helper()
	var ops []string
	for _, rt := range r.Routes() {
		if !strings.HasPrefix(rt.Path, "/api/v1/") && rt.Path != "/health" && !strings.HasPrefix(rt.Path, "/health/") {
			continue
		}
		segs := strings.Split(rt.Path, "/")
		events := []string{""}
		for i, s := range segs {
			switch {
			case s == ":event":
				events = typedEvents
			case strings.HasPrefix(s, ":"):
				segs[i] = "{" + s[1:] + "}"
			case strings.HasPrefix(s, "*"):
				t.Errorf("route %s %s: a catch-all cannot be described", rt.Method, rt.Path)
			}
		}
		path := strings.Join(segs, "/")
		for _, ev := range events {
			p := path
			if ev != "" {
				p = strings.Replace(path, ":event", ev, 1)
			}
			ops = append(ops, rt.Method+" "+p)
		}
	}
	slices.Sort(ops)
	return ops
}

func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc := parseOpenAPI(t)
	if doc.OpenAPI != "3.0.3" || doc.Info.Title != "hubnode HTTP API" || doc.Info.Version != "1" {
		t.Errorf("header: openapi %q, title %q, version %q", doc.OpenAPI, doc.Info.Title, doc.Info.Version)
	}

	n, err := New(Options{Auth: AuthOptions{Secret: []byte("0123456789abcdef0123")}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil && !errors.Is(err, errShuttingDown) {
			t.Errorf("Shutdown: %v", err)
		}
	})
	routed := routedOperations(t, n.Handler().(*gin.Engine))
	documented := specOperations(doc)
	if len(routed) == 0 || len(documented) == 0 {
		t.Fatalf("routed %v, documented %v", routed, documented)
	}
	for _, op := range routed {
		if !slices.Contains(documented, op) {
			t.Errorf("route %s is not in openapi.yaml", op)
		}
	}
	for _, op := range documented {
		if !slices.Contains(routed, op) {
			t.Errorf("openapi.yaml documents %s, which is not routed", op)
		}
	}
	for path := range doc.Paths {
		if !strings.HasPrefix(path, "/api/v1/") && path != "/health" && !strings.HasPrefix(path, "/health/") {
			t.Errorf("openapi.yaml path %s is outside /api/v1 and /health", path)
		}
	}
}

func TestOpenAPIServed(t *testing.T) {
	n, err := New(Options{Auth: AuthOptions{Secret: []byte("0123456789abcdef0123")}, APIKey: "0123456789abcdef-api"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil && !errors.Is(err, errShuttingDown) {
			t.Errorf("Shutdown: %v", err)
		}
	})
	// No Authorization header: the description is public.
	rec := httptest.NewRecorder()
	n.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/openapi.yaml", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /api/v1/openapi.yaml: %d %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/yaml" {
		t.Errorf("Content-Type %q", ct)
	}
	if !slices.Equal(rec.Body.Bytes(), openAPISpec) {
		t.Error("served description differs from the embedded one")
	}
}
