package api

import (
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"

	"github.com/keybridge/keybridge/internal/audit"
	"github.com/keybridge/keybridge/internal/manage"
	"github.com/keybridge/keybridge/internal/store"
)

// permTenantsManage is what tenant administration needs. Under Endatix
// only PlatformAdmin reaches platform.* (the preset's policy), so a tenant
// Admin's bypass does not; under fastn no system role holds it and a
// deployment grants it to its platform operators by a rule.
var permTenantsManage = []string{"platform.tenants.manage"}

// Tenants serves tenant administration (issue 16): list, create, rename,
// disable and enable tenants, through manage.Tenants. The handlers decode,
// call and encode; the service changes Keycloak and records the tenant.
type Tenants struct {
	Log     *slog.Logger
	Gate    Gatekeeper
	Service *manage.Tenants
	// System runs the service across tenants, on the sync role: tenant
	// administration is realm-wide, and only sync's role writes tenants.
	System *store.Store
	Audit  audit.Recorder
	Now    func() time.Time
}

// Register adds the routes.
func (t *Tenants) Register(r gin.IRouter) {
	r.GET("/v1/tenants", t.Gate.Require("tenants.list", permTenantsManage...), t.list)
	r.POST("/v1/tenants", t.Gate.Require("tenants.create", permTenantsManage...), t.create)
	r.PATCH("/v1/tenants/:id", t.Gate.Require("tenants.update", permTenantsManage...), t.update)
}

// OpenAPIPaths documents the routes.
func (t *Tenants) OpenAPIPaths() map[string]map[string]any {
	const who = " Needs platform.tenants.manage: under Endatix a PlatformAdmin (a tenant Admin is refused, 403), under fastn whoever a rule grants it to."
	return map[string]map[string]any{
		"/v1/tenants": {
			"get": op("Every tenant with its source (organization, group, attribute, claim), status (active, disabled, deleted), "+
				"the id of its Keycloak organization or group, and its member count."+who, permTenantsManage, "200"),
			"post": op("Create a tenant, {id, name}: creates the Keycloak organization (alias id) or the group <group_prefix>/<id> "+
				"(the name in its keybridge.tenant.name attribute) the tenant comes from, then records the tenant. 409 when the tenant exists, "+
				"when Keycloak already has the organization or group (it becomes a tenant with the next sync), or when tenants come from "+
				"an attribute or a claim (nothing to create); 502 when Keycloak refuses."+who, permTenantsManage, "201", "400", "409", "502"),
		},
		"/v1/tenants/{id}": {
			"patch": op("Rename ({name}) or disable and enable ({disabled}) a tenant: the organization's name and enabled flag, or, for a group "+
				"tenant, its group's attributes keybridge.tenant.name and keybridge.tenant.disabled (the group's name, which is the tenant's id "+
				"and part of every path and token, stays). keybridge refuses every request acting in a disabled tenant (403 tenant_forbidden) "+
				"except a platform caller's. 409 for a deleted tenant, an attribute "+
				"or claim tenant, or one whose Keycloak object sync has not recorded yet."+who, permTenantsManage, "200", "400", "404", "409", "502"),
		},
	}
}

func (t *Tenants) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

// record audits an action on a tenant in that tenant's log, so its own
// admins see who renamed or disabled it.
func (t *Tenants) record(c *gin.Context, action, tenant, outcome, reason string) {
	if t.Audit == nil {
		return
	}
	e := audit.Entry{OccurredAt: t.now(), TenantID: tenant, Action: action, ResourceType: "tenant", ResourceID: tenant,
		Outcome: outcome, Reason: reason, RequestID: RequestID(c), ActorName: "system"}
	if g := t.Gate.Grant(c); g != nil {
		e.ActorID, e.ActorName = g.Subject, g.Username
	}
	t.Audit.Record(c.Request.Context(), e)
}

// fail answers and audits a failed action: 400 for an invalid request,
// 404, 409 with the reason, 502 when Keycloak refused, 500 otherwise.
func (t *Tenants) fail(c *gin.Context, action, tenant string, err error) {
	var invalid *manage.Invalid
	var kc *manage.KeycloakError
	switch {
	case errors.As(err, &invalid):
		t.record(c, action, tenant, audit.Failure, invalid.Message)
		Error(c, http.StatusBadRequest, "invalid_request", invalid.Message)
	case errors.Is(err, store.ErrNotFound):
		t.record(c, action, tenant, audit.Failure, "no such tenant")
		Error(c, http.StatusNotFound, "not_found", "tenant not found")
	case errors.Is(err, store.ErrConflict):
		t.record(c, action, tenant, audit.Failure, err.Error())
		Error(c, http.StatusConflict, "conflict", err.Error())
	case errors.As(err, &kc):
		t.Log.ErrorContext(c.Request.Context(), "tenant administration: keycloak", "action", action, "tenant", tenant, "error", err, "request_id", RequestID(c))
		t.record(c, action, tenant, audit.Failure, "keycloak could not "+kc.Op)
		Error(c, http.StatusBadGateway, "keycloak_error", err.Error())
	default:
		t.Log.ErrorContext(c.Request.Context(), "tenant administration failed", "action", action, "tenant", tenant, "error", err, "request_id", RequestID(c))
		t.record(c, action, tenant, audit.Failure, "internal error")
		Error(c, http.StatusInternalServerError, "internal", "internal error")
	}
}

func (t *Tenants) list(c *gin.Context) {
	var out []store.Tenant
	ctx := c.Request.Context()
	err := t.System.InSystemTx(ctx, func(tx pgx.Tx) (err error) { out, err = t.Service.List(ctx, tx); return err })
	if err != nil {
		t.fail(c, "tenants.list", "", err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"items": out})
}

func (t *Tenants) create(c *gin.Context) {
	const action = "tenants.create"
	var req struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	if err := decodeJSON(c, &req); err != nil {
		t.fail(c, action, "", &manage.Invalid{Message: err.Error()})
		return
	}
	var out store.Tenant
	ctx := c.Request.Context()
	err := t.System.InSystemTx(ctx, func(tx pgx.Tx) (err error) { out, err = t.Service.Create(ctx, tx, req.ID, req.Name); return err })
	if err != nil {
		t.fail(c, action, req.ID, err)
		return
	}
	t.record(c, action, out.ID, audit.Success, "created "+out.Source+" "+out.KeycloakID)
	c.JSON(http.StatusCreated, out)
}

func (t *Tenants) update(c *gin.Context) {
	const action = "tenants.update"
	id := c.Param("id")
	var req struct {
		Name     *string `json:"name"`
		Disabled *bool   `json:"disabled"`
	}
	if err := decodeJSON(c, &req); err != nil {
		t.fail(c, action, id, &manage.Invalid{Message: err.Error()})
		return
	}
	var out store.Tenant
	ctx := c.Request.Context()
	err := t.System.InSystemTx(ctx, func(tx pgx.Tx) (err error) {
		out, err = t.Service.Update(ctx, tx, id, manage.TenantChange{Name: req.Name, Disabled: req.Disabled})
		return err
	})
	if err != nil {
		t.fail(c, action, id, err)
		return
	}
	reason := ""
	if req.Name != nil {
		reason = "renamed " + *req.Name
	}
	if req.Disabled != nil {
		reason += map[bool]string{true: " disabled", false: " enabled"}[*req.Disabled]
	}
	t.record(c, action, id, audit.Success, strings.TrimSpace(reason))
	c.JSON(http.StatusOK, out)
}
