package lsp

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
)

// MaxMessage is the largest message body the server reads. A 10 MB document fits with room
// for JSON escapes; a larger body is skipped (read and dropped) and answered as an invalid
// request when its id can be found, so one oversized message does not end the session.
const MaxMessage = 64 << 20

// maxHeaderLine bounds one header line, so that a stream with no newline cannot make the
// reader buffer without limit.
const maxHeaderLine = 4096

// JSON-RPC and LSP error codes.
const (
	codeParseError           = -32700
	codeInvalidRequest       = -32600
	codeMethodNotFound       = -32601
	codeInvalidParams        = -32602
	codeInternalError        = -32603
	codeServerNotInitialized = -32002
)

// rpcError is a JSON-RPC error object.
type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (e *rpcError) Error() string { return fmt.Sprintf("jsonrpc error %d: %s", e.Code, e.Message) }

// incoming is any message a client sends: a request (ID and Method), a notification
// (Method only) or a response to a server request (ID and Result or Error).
type incoming struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id,omitempty"`
	Method  string          `json:"method,omitempty"`
	Params  json.RawMessage `json:"params,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   *rpcError       `json:"error,omitempty"`
}

func (m *incoming) isRequest() bool { return len(m.ID) > 0 && m.Method != "" }

// response is a successful reply; Result is written even when null, as JSON-RPC requires.
type response struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  any             `json:"result"`
}

// errorResponse is a failed reply.
type errorResponse struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Error   *rpcError       `json:"error"`
}

// notification is a message from the server that expects no reply.
type notification struct {
	JSONRPC string `json:"jsonrpc"`
	Method  string `json:"method"`
	Params  any    `json:"params"`
}

// errFraming is a header block the reader cannot make sense of; the reader skips it and
// goes on with the next message.
var errFraming = errors.New("lsp: malformed message header")

// frame is one message body, or why there is none.
type frame struct {
	body []byte
	err  error // errFraming, or a *tooLarge
}

// tooLarge is a body over MaxMessage that was skipped.
type tooLarge struct{ size int64 }

func (e *tooLarge) Error() string {
	return fmt.Sprintf("lsp: message of %d bytes is over the limit of %d", e.size, MaxMessage)
}

// readFrame reads one Content-Length framed message. It returns io.EOF (or another read
// error) when the stream ends; a malformed header or an oversized body comes back as
// frame.err with the stream positioned after it.
func readFrame(r *bufio.Reader) (frame, error) {
	length := int64(-1)
	sawHeader := false
	for {
		line, err := readLine(r)
		if err != nil {
			if errors.Is(err, io.EOF) && sawHeader {
				return frame{}, io.ErrUnexpectedEOF
			}
			return frame{}, err
		}
		if line == "" {
			if !sawHeader {
				continue // stray blank lines between messages
			}
			break
		}
		sawHeader = true
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			length = -2 // remember the damage; finish the header block first
			continue
		}
		if strings.EqualFold(strings.TrimSpace(name), "Content-Length") {
			n, err := strconv.ParseInt(strings.TrimSpace(value), 10, 64)
			if err != nil || n < 0 {
				length = -2
				continue
			}
			if length != -2 {
				length = n
			}
		}
	}
	if length < 0 {
		return frame{err: errFraming}, nil
	}
	if length > MaxMessage {
		if _, err := io.CopyN(io.Discard, r, length); err != nil {
			return frame{}, fmt.Errorf("lsp: skipping an oversized message: %w", err)
		}
		return frame{err: &tooLarge{size: length}}, nil
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(r, body); err != nil {
		return frame{}, fmt.Errorf("lsp: reading a message body of %d bytes: %w", length, err)
	}
	return frame{body: body}, nil
}

// readLine reads one header line without its CR LF, refusing lines over maxHeaderLine.
func readLine(r *bufio.Reader) (string, error) {
	var buf []byte
	for {
		chunk, err := r.ReadSlice('\n')
		buf = append(buf, chunk...)
		if len(buf) > maxHeaderLine {
			// Drop the rest of the line, whatever its length.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = r.ReadSlice('\n')
			}
			if err != nil {
				return "", err
			}
			return "\x00", nil // not a valid header: the caller marks the block malformed
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			return "", err
		}
		return string(bytes.TrimRight(buf, "\r\n")), nil
	}
}

// writer frames outgoing messages; it is safe for concurrent use.
type writer struct {
	mu  sync.Mutex
	out io.Writer
	err error // the first write error; later writes are dropped
}

func (w *writer) write(msg any) error {
	body, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("lsp: encoding a message: %w", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n", len(body))
	b.Write(body)
	if _, err := w.out.Write(b.Bytes()); err != nil {
		w.err = fmt.Errorf("lsp: writing a message: %w", err)
	}
	return w.err
}
