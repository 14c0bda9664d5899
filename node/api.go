package node

import (
	"bytes"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/messaging-hub/hubnode/adapter"
)

const (
	// maxAPIBody bounds one HTTP API request body.
	maxAPIBody = 8 << 20
	// maxBatch bounds the emits of one POST /api/v1/emit.
	maxBatch = 1000
)

//go:embed openapi.yaml
var openAPISpec []byte

func (n *Node) routeAPI(g *gin.RouterGroup) {
	g.GET("/openapi.yaml", func(c *gin.Context) { c.Data(http.StatusOK, "application/yaml", openAPISpec) })
	g.Use(n.apiAuth)
	g.POST("/emit", n.apiEmit)
	g.POST("/users/:userId/events/:event", n.apiTypedEmit)
	g.POST("/users/:userId/disconnect", n.apiDisconnect)
	g.GET("/users/:userId/presence", n.apiPresence)
	g.GET("/stats", n.apiStats)
}

// apiAuth requires "Authorization: Bearer $API_KEY". Without a configured
// key the API is closed (503), never open.
func (n *Node) apiAuth(c *gin.Context) {
	if n.opts.APIKey == "" {
		c.AbortWithStatusJSON(http.StatusServiceUnavailable, gin.H{"error": "the HTTP API is disabled: API_KEY is not set"})
		return
	}
	got, ok := strings.CutPrefix(c.GetHeader("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(n.opts.APIKey)) != 1 {
		c.Header("WWW-Authenticate", `Bearer realm="hubnode"`)
		c.AbortWithStatusJSON(http.StatusUnauthorized, gin.H{"error": "missing or invalid API key"})
		return
	}
	c.Next()
}

type emitRequest struct {
	UserID string          `json:"userId"`
	Event  string          `json:"event"`
	Data   json.RawMessage `json:"data"`
}

// apiEmit takes one {userId, event, data} or an array of them. All items
// are validated before any is emitted.
func (n *Node) apiEmit(c *gin.Context) {
	body, ok := readBody(c)
	if !ok {
		return
	}
	var items []emitRequest
	var err error
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) > 0 && t[0] == '[' {
		err = strictJSON(body, &items)
	} else {
		var one emitRequest
		err = strictJSON(body, &one)
		items = []emitRequest{one}
	}
	if err != nil {
		badRequest(c, err)
		return
	}
	if len(items) == 0 || len(items) > maxBatch {
		badRequest(c, invalidf("between 1 and %d emits per request, got %d", maxBatch, len(items)))
		return
	}
	// Every item is validated and encoded before any is sent.
	msgs := make([]*adapter.Message, len(items))
	for i, it := range items {
		var args []json.RawMessage
		if it.Data != nil {
			var compact bytes.Buffer
			_ = json.Compact(&compact, it.Data) // valid: it was decoded
			args = append(args, compact.Bytes())
		}
		msg, err := n.service.prepare(it.UserID, it.Event, args...)
		if err != nil {
			badRequest(c, fmt.Errorf("item %d: %w", i, err))
			return
		}
		msgs[i] = msg
	}
	offsets := make([]string, 0, len(msgs))
	for i, msg := range msgs {
		if err := n.service.broadcast(c, "http", items[i].Event, msg); err != nil {
			n.emitFailed(c, err, gin.H{"accepted": i})
			return
		}
		if msg.Offset != "" {
			offsets = append(offsets, msg.Offset)
		}
	}
	resp := gin.H{"accepted": len(items)}
	if len(offsets) == len(items) { // with recovery on: each emit's offset, in order
		resp["offsets"] = offsets
	}
	c.JSON(http.StatusAccepted, resp)
}

// apiTypedEmit serves one endpoint per guide event: the body is validated
// against the event's type and the timestamp added.
func (n *Node) apiTypedEmit(c *gin.Context) {
	var p typedPayload
	switch c.Param("event") {
	case EventNewMessage:
		p = &newMessagePayload{}
	case EventMessageStatusUpdate:
		p = &messageStatusPayload{}
	case EventUnreadCountUpdate:
		p = &unreadCountPayload{}
	case EventConversationUpdate:
		p = &conversationPayload{}
	case EventError:
		p = &errorPayload{}
	default:
		c.JSON(http.StatusNotFound, gin.H{"error": fmt.Sprintf("unknown event %q: one of new_message, message_status_update, unread_count_update, conversation_update, error", c.Param("event"))})
		return
	}
	body, ok := readBody(c)
	if !ok {
		return
	}
	if err := strictJSON(body, p); err != nil {
		badRequest(c, err)
		return
	}
	offset, err := n.service.emitTyped(c, "http", c.Param("userId"), c.Param("event"), p)
	if err != nil {
		n.emitFailed(c, err, nil)
		return
	}
	resp := gin.H{"accepted": 1}
	if offset != "" {
		resp["offset"] = offset
	}
	c.JSON(http.StatusAccepted, resp)
}

func (n *Node) apiDisconnect(c *gin.Context) {
	id := c.Param("userId")
	if err := n.service.DisconnectUser(c, id); err != nil {
		n.emitFailed(c, err, nil)
		return
	}
	c.JSON(http.StatusAccepted, gin.H{"userId": id})
}

func (n *Node) apiPresence(c *gin.Context) {
	id := c.Param("userId")
	count, err := n.service.GetUserConnectionCount(c, id)
	if err != nil {
		n.emitFailed(c, err, nil)
		return
	}
	c.JSON(http.StatusOK, gin.H{"userId": id, "connected": count > 0, "connections": count})
}

func (n *Node) apiStats(c *gin.Context) {
	st, err := n.service.GetStats(c)
	if err != nil {
		n.emitFailed(c, err, nil)
		return
	}
	c.JSON(http.StatusOK, st)
}

// readBody reads a bounded request body, answering 413 above the bound.
func readBody(c *gin.Context) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, maxAPIBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		c.AbortWithStatusJSON(http.StatusRequestEntityTooLarge, gin.H{"error": fmt.Sprintf("body above %d bytes", maxAPIBody)})
		return nil, false
	case err != nil:
		badRequest(c, err)
		return nil, false
	}
	return body, true
}

// strictJSON decodes one JSON value, refusing unknown fields (a misspelt
// field is a bug to report, not to ignore) and trailing data.
func strictJSON(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return invalidf("body: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return invalidf("body: trailing data after the JSON value")
	}
	return nil
}

func badRequest(c *gin.Context, err error) {
	c.AbortWithStatusJSON(http.StatusBadRequest, gin.H{"error": err.Error()})
}

// emitFailed maps a service error: bad input 400, anything else (the
// cluster cannot be reached) 503, so a caller never mistakes it for success.
func (n *Node) emitFailed(c *gin.Context, err error, extra gin.H) {
	if errors.Is(err, ErrInvalid) {
		badRequest(c, err)
		return
	}
	body := gin.H{"error": err.Error()}
	for k, v := range extra {
		body[k] = v
	}
	c.AbortWithStatusJSON(http.StatusServiceUnavailable, body)
}
