package api

import (
	"github.com/gin-gonic/gin"

	"github.com/keybridge/keybridge/internal/ratelimit"
)

// throttleUnauthenticated is called as a decision route is about to refuse
// a request before authentication (no or an invalid token). It takes a
// token of the client address's bucket (rate_limit.unauthenticated, shared
// with the management routes' middleware); with none left it answers 429
// with Retry-After instead and reports true. c.ClientIP() is the peer, or
// the client a trusted proxy forwarded for.
func (d *Decisions) throttleUnauthenticated(c *gin.Context) bool {
	if ok, wait := d.Unauthenticated.Allow(ratelimit.AddressKey(c.ClientIP())); !ok {
		d.rateLimited(c, "unauthenticated", wait)
		return true
	}
	return false
}
