package sync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	gosync "sync"
	"sync/atomic"
	"time"

	"github.com/Nerzal/gocloak/v13"
	"github.com/cenkalti/backoff/v5"

	"github.com/keybridge/keybridge/internal/metrics"
)

// Keycloak is the admin-API client sync reads with, as the keybridge
// client's service account. gocloak provides the token and the HTTP client;
// the endpoints gocloak v13.9.0 lacks (child groups, subGroupCount, admin
// events, organizations) are called through GetRequestWithBearerAuth here,
// in this one file.
type Keycloak struct {
	gc       *gocloak.GoCloak
	base     string
	realm    string
	clientID string
	secret   string
	pageSize int
	retries  uint
	conc     int
	metrics  *metrics.Metrics

	mu      gosync.Mutex
	token   string
	expires time.Time

	requests atomic.Int64
}

// KeycloakOptions configure the client.
type KeycloakOptions struct {
	URL, Realm, ClientID, ClientSecret string
	Timeout                            time.Duration
	PageSize                           int
	Retries                            int
	// Concurrency bounds the requests a snapshot has in flight at once
	// (keycloak.concurrency); 1 when not positive.
	Concurrency int
	Metrics     *metrics.Metrics
}

// NewKeycloak returns a client; it does not dial.
func NewKeycloak(o KeycloakOptions) *Keycloak {
	base := strings.TrimRight(o.URL, "/")
	gc := gocloak.NewClient(base)
	gc.RestyClient().SetTimeout(o.Timeout)
	if o.PageSize <= 0 {
		o.PageSize = 200
	}
	return &Keycloak{gc: gc, base: base, realm: o.Realm, clientID: o.ClientID, secret: o.ClientSecret,
		pageSize: o.PageSize, retries: uint(max(o.Retries, 0)) + 1, conc: max(o.Concurrency, 1), metrics: o.Metrics}
}

// Requests counts admin-API requests made so far.
func (k *Keycloak) Requests() int64 { return k.requests.Load() }

// ErrUnavailable wraps failures to reach Keycloak.
var ErrUnavailable = errors.New("keycloak unavailable")

func (k *Keycloak) accessToken(ctx context.Context) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.token != "" && time.Now().Before(k.expires) {
		return k.token, nil
	}
	start := time.Now()
	jwt, err := k.gc.LoginClient(ctx, k.clientID, k.secret, k.realm)
	status := 0 // gocloak reports no status; a failure is class "error"
	if err == nil {
		status = http.StatusOK
	}
	k.observe("token", start, err, status)
	if err != nil {
		return "", fmt.Errorf("%w: service account login: %s", ErrUnavailable, scrub(err))
	}
	k.token = jwt.AccessToken
	// Refresh at three quarters of the lifetime so no request carries a
	// token that expires on the way.
	k.expires = time.Now().Add(time.Duration(jwt.ExpiresIn) * time.Second * 3 / 4)
	return k.token, nil
}

func (k *Keycloak) observe(op string, start time.Time, err error, status int) {
	k.requests.Add(1)
	if k.metrics == nil {
		return
	}
	class := "error"
	switch {
	case status >= 500:
		class = "5xx"
	case status >= 400:
		class = "4xx"
	case status >= 200 && err == nil:
		class = "2xx"
	}
	k.metrics.KeycloakRequests.WithLabelValues(op, class).Inc()
	k.metrics.KeycloakLatency.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

// get fetches one admin-API path into out, retrying transient failures
// (network errors, 5xx, 429) with exponential backoff.
func (k *Keycloak) get(ctx context.Context, op, path string, q url.Values, out any) error {
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		tok, err := k.accessToken(ctx)
		if err != nil {
			return struct{}{}, err
		}
		release, err := acquire(ctx)
		if err != nil {
			return struct{}{}, backoff.Permanent(err)
		}
		start := time.Now()
		res, err := k.gc.GetRequestWithBearerAuth(ctx, tok).SetQueryParamsFromValues(q).Get(k.base + "/admin/realms/" + url.PathEscape(k.realm) + path)
		release()
		status := 0
		if res != nil {
			status = res.StatusCode()
		}
		k.observe(op, start, err, status)
		switch {
		case err != nil:
			return struct{}{}, fmt.Errorf("%w: %s %s: %v", ErrUnavailable, op, path, err)
		case status == http.StatusUnauthorized:
			k.mu.Lock()
			k.token = ""
			k.mu.Unlock()
			return struct{}{}, fmt.Errorf("%w: %s: 401", ErrUnavailable, op)
		case status >= 500 || status == http.StatusTooManyRequests:
			return struct{}{}, fmt.Errorf("%w: %s %s: status %d", ErrUnavailable, op, path, status)
		case status == http.StatusNotFound:
			return struct{}{}, backoff.Permanent(fmt.Errorf("%s %s: %w", op, path, ErrNotFound))
		case status == http.StatusForbidden:
			return struct{}{}, backoff.Permanent(fmt.Errorf("%s %s: %w", op, path, ErrForbidden))
		case status != http.StatusOK:
			return struct{}{}, backoff.Permanent(fmt.Errorf("%s %s: status %d", op, path, status))
		}
		if err := json.Unmarshal(res.Body(), out); err != nil {
			return struct{}{}, backoff.Permanent(fmt.Errorf("%s %s: malformed answer: %w", op, path, err))
		}
		return struct{}{}, nil
	}, backoff.WithMaxTries(k.retries), backoff.WithBackOff(fastBackoff()))
	return err
}

// ErrNotFound is a 404 from Keycloak: the object is gone.
var ErrNotFound = errors.New("not found in keycloak")

// ErrForbidden is a 403 from Keycloak: the service account lacks a role.
var ErrForbidden = errors.New("forbidden by keycloak (status 403): the service account lacks a role")

func fastBackoff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 200 * time.Millisecond
	b.MaxInterval = 2 * time.Second
	return b
}

// pages reads an offset-paged list until a short page.
func pages[T any](ctx context.Context, k *Keycloak, op, path string, q url.Values) ([]T, error) {
	all, _, err := pagesUpTo[T](ctx, k, op, path, q, k.pageSize, 0, nil)
	return all, err
}

// pagesUpTo reads an offset-paged list size entries at a time until a
// short page (complete) or, when limit > 0, until first reaches limit
// (incomplete: the list has at least limit entries). report, when not nil,
// is told the length of each page.
func pagesUpTo[T any](ctx context.Context, k *Keycloak, op, path string, q url.Values, size, limit int, report func(int)) (all []T, complete bool, err error) {
	for first := 0; limit <= 0 || first < limit; first += size {
		var page []T
		if err := k.get(ctx, op, path, pageQuery(q, first, size), &page); err != nil {
			return nil, false, err
		}
		if report != nil {
			report(len(page))
		}
		all = append(all, page...)
		if len(page) < size {
			return all, true, nil
		}
	}
	return all, false, nil
}

// pageQuery is q with one page's first and max.
func pageQuery(q url.Values, first, size int) url.Values {
	qq := make(url.Values, len(q)+2)
	for key, v := range q {
		qq[key] = v
	}
	qq.Set("first", strconv.Itoa(first))
	qq.Set("max", strconv.Itoa(size))
	return qq
}

type limitKey struct{}

// withLimit bounds the requests made under ctx, from any number of
// goroutines, to n in flight at once: a snapshot reads its parts at once
// and still keeps Keycloak to keycloak.concurrency requests.
func withLimit(ctx context.Context, n int) context.Context {
	return context.WithValue(ctx, limitKey{}, make(chan struct{}, max(n, 1)))
}

// acquire waits for a request slot under ctx's limit, if it has one; the
// caller releases it once the answer is in.
func acquire(ctx context.Context) (func(), error) {
	sem, _ := ctx.Value(limitKey{}).(chan struct{})
	if sem == nil {
		return func() {}, nil
	}
	select {
	case sem <- struct{}{}:
		return func() { <-sem }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// taskGroup runs tasks at once; the first error cancels the others and is
// what Wait returns.
type taskGroup struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     gosync.WaitGroup
	once   gosync.Once
	err    error
}

func newTaskGroup(ctx context.Context) *taskGroup {
	ctx, cancel := context.WithCancel(ctx)
	return &taskGroup{ctx: ctx, cancel: cancel}
}

func (g *taskGroup) Go(fn func(context.Context) error) {
	g.wg.Go(func() {
		if err := fn(g.ctx); err != nil {
			g.once.Do(func() { g.err = err; g.cancel() })
		}
	})
}

func (g *taskGroup) Wait() error {
	g.wg.Wait()
	g.cancel()
	return g.err
}

// interner gives each distinct id a small ordinal and one string.
type interner struct {
	mu  gosync.Mutex
	ord map[string]int32
	ids []string
}

func newInterner() *interner { return &interner{ord: map[string]int32{}} }

// of returns id's ordinal and the string the interner holds for it.
func (n *interner) of(id string) (int32, string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if o, ok := n.ord[id]; ok {
		return o, n.ids[o]
	}
	o := int32(len(n.ids))
	n.ord[id] = o
	n.ids = append(n.ids, id)
	return o, id
}

func (n *interner) lookup(id string) (int32, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	o, ok := n.ord[id]
	return o, ok
}

func (n *interner) id(o int32) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ids[o]
}

func (n *interner) len() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.ids)
}

// forEach calls fn for 0 <= i < n with at most keycloak.concurrency calls
// under way at once. The first error cancels the calls not yet begun and
// is returned once the running ones have ended.
func (k *Keycloak) forEach(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next  atomic.Int64
		wg    gosync.WaitGroup
		once  gosync.Once
		first error
	)
	for range min(k.conc, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || cctx.Err() != nil {
					return
				}
				if err := fn(cctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

func scrub(err error) string {
	var ae *gocloak.APIError
	if errors.As(err, &ae) {
		return fmt.Sprintf("status %d: %s", ae.Code, ae.Message)
	}
	return err.Error()
}
