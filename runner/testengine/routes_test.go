package main

import (
	"bytes"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func newTestServer(t *testing.T, o options) *httptest.Server {
	t.Helper()
	s := newServer(o)
	s.ready.Store(true)
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return ts
}

func postBody(t *testing.T, url, ct string, body io.Reader) (int, string) {
	t.Helper()
	resp, err := http.Post(url, ct, body)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestRoutes_Generation(t *testing.T) {
	t.Parallel()
	o := defaultOptions()
	o.alias = "m"
	ts := newTestServer(t, o)
	tests := []struct {
		name, path, body string
		want             []string // substrings of the answer, in order
	}{
		{"Messages", "/v1/messages", `{"model":"m","max_tokens":9,"system":"be brief","messages":[{"role":"user","content":[{"type":"text","text":"hi there"}]}]}`,
			[]string{`"content":[{"text":"echo: be brief hi there","type":"text"}]`, `"stop_reason":"end_turn"`, `"type":"message"`, `"input_tokens":4`}},
		{"MessagesStream", "/v1/messages", `{"model":"m","max_tokens":2,"stream":true,"messages":[{"role":"user","content":"hi there"}]}`,
			[]string{"event: message_start\n", "event: content_block_start\n", `"text":"echo:"`, `"text":" hi"`,
				"event: content_block_stop\n", `"stop_reason":"max_tokens"`, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"}},
		{"Responses", "/v1/responses", `{"model":"m","input":"one two"}`,
			[]string{`"object":"response"`, `"text":"echo: one two"`, `"type":"output_text"`, `"status":"completed"`}},
		{"ResponsesStream", "/v1/responses", `{"model":"m","stream":true,"input":[{"role":"user","content":[{"type":"input_text","text":"one"}]}]}`,
			[]string{"event: response.created\n", "event: response.output_text.delta\n", `"delta":" one"`, "event: response.completed\n"}},
		{"Infill", "/infill", `{"input_prefix":"def f(","input_suffix":"):"}`,
			[]string{`"content":"echo: def f( ):"`, `"stop":true`}},
		{"ChatTools", "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"get_time","parameters":{"type":"object"}}}]}`,
			[]string{`"finish_reason":"tool_calls"`, `{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"parameters\":{\"type\":\"object\"}}}]}"`, `"name":"get_time"`}},
		{"CountTokens", "/v1/messages/count_tokens", `{"model":"m","messages":[{"role":"user","content":"a b c"}]}`, []string{`{"input_tokens":3}`}},
		{"InputTokens", "/v1/responses/input_tokens", `{"model":"m","input":"a b"}`, []string{`"input_tokens":2`, `"object":"response.input_tokens"`}},
		{"Tokenize", "/tokenize", `{"content":"hi","with_pieces":true}`, []string{`{"tokens":[{"id":104,"piece":"h"},{"id":105,"piece":"i"}]}`}},
		{"Detokenize", "/detokenize", `{"tokens":[104,105]}`, []string{`{"content":"hi"}`}},
		{"ApplyTemplate", "/apply-template", `{"messages":[{"role":"user","content":"hi"}]}`, []string{`{"prompt":"\u003c|user|\u003e\nhi\n\u003c|assistant|\u003e\n"}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := postBody(t, ts.URL+tt.path, "application/json", strings.NewReader(tt.body))
			if code != 200 {
				t.Fatalf("%d %s", code, body)
			}
			rest := body
			for _, w := range tt.want {
				k := strings.Index(rest, w)
				if k < 0 {
					t.Fatalf("answer lacks %q (in order):\n%s", w, body)
				}
				rest = rest[k+len(w):]
			}
		})
	}
}

func TestRoutes_Rerank(t *testing.T) {
	t.Parallel()
	body := `{"model":"r","query":"red apple","documents":["a green pear","a red apple","red car"],"top_n":2}`
	if code, out := postBody(t, newTestServer(t, defaultOptions()).URL+"/v1/rerank", "application/json", strings.NewReader(body)); code != 501 {
		t.Fatalf("without --reranking: %d %s", code, out)
	}
	o := defaultOptions()
	o.reranking = true
	code, out := postBody(t, newTestServer(t, o).URL+"/v1/rerank", "application/json", strings.NewReader(body))
	var res struct {
		Model   string
		Results []struct {
			Index int
			Score float64 `json:"relevance_score"`
		}
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 200 || res.Model != "r" || len(res.Results) != 2 ||
		res.Results[0].Index != 1 || res.Results[0].Score != 1 || res.Results[1].Index != 2 {
		t.Fatalf("%d %s", code, out)
	}
}

func TestRoutes_Transcription(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, defaultOptions())
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField("model", "whisper")
	fw, _ := mw.CreateFormFile("file", "clip.wav")
	_, _ = fw.Write(make([]byte, 1234))
	_ = mw.Close()
	code, out := postBody(t, ts.URL+"/v1/audio/transcriptions", mw.FormDataContentType(), &buf)
	if code != 200 || !strings.Contains(out, `"text":"transcript of clip.wav (1234 bytes)"`) {
		t.Fatalf("%d %s", code, out)
	}
}
