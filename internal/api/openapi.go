package api

import (
	"net/http"

	"github.com/gin-gonic/gin"
)

// openAPI assembles the document from every documented module and the
// server's own routes.
func (s *Server) openAPI() map[string]any {
	paths := map[string]any{
		"/healthz":      map[string]any{"get": map[string]any{"summary": "Liveness", "responses": map[string]any{"200": map[string]any{"description": "alive"}}}},
		"/readyz":       map[string]any{"get": map[string]any{"summary": "Readiness: database reachable, first sync done, the Keycloak service account's access (keycloak_permissions), ...; each check ok or failing, the reasons in the log", "responses": map[string]any{"200": map[string]any{"description": "ready"}, "503": map[string]any{"description": "not ready"}}}},
		"/metrics":      map[string]any{"get": map[string]any{"summary": "Prometheus metrics", "responses": map[string]any{"200": map[string]any{"description": "text exposition"}}}},
		"/openapi.json": map[string]any{"get": map[string]any{"summary": "This document", "responses": map[string]any{"200": map[string]any{"description": "OpenAPI 3.1"}}}},
	}
	for _, m := range s.Modules {
		doc, ok := m.(Documented)
		if !ok {
			continue
		}
		for p, ops := range doc.OpenAPIPaths() {
			existing, _ := paths[p].(map[string]any)
			if existing == nil {
				existing = map[string]any{}
			}
			for method, o := range ops {
				existing[method] = o
			}
			paths[p] = existing
		}
	}
	return map[string]any{
		"openapi": "3.1.0",
		"info":    map[string]any{"title": "keybridge", "version": "1"},
		"components": map[string]any{"securitySchemes": map[string]any{
			"bearer": map[string]any{"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
			"basic":  map[string]any{"type": "http", "scheme": "basic"},
		}},
		"paths": paths,
	}
}

func (s *Server) serveOpenAPI(c *gin.Context) { c.JSON(http.StatusOK, s.openAPI()) }
