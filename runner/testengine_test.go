package runner

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// These tests pin the stand-in engine's HTTP shapes, which other packages'
// tests rely on (see testengine's package doc).

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// sseData returns the data fields of an event stream.
func sseData(t *testing.T, body string) []string {
	t.Helper()
	var out []string
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			out = append(out, d)
		}
	}
	return out
}

func TestTestEngine_Routes(t *testing.T) {
	t.Parallel()
	p := startReady(t, testConfig(t, "--embeddings", "--pooling", "mean", "--metrics", "--alias", "tiny"))
	u := p.URL()

	t.Run("Chat", func(t *testing.T) {
		code, body := post(t, u+"/v1/chat/completions",
			`{"model":"tiny","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"}]}]}`)
		var v struct {
			Object  string
			Model   string
			Choices []struct {
				FinishReason string `json:"finish_reason"`
				Message      struct{ Role, Content string }
			}
			Usage struct {
				CompletionTokens int `json:"completion_tokens"`
				PromptTokens     int `json:"prompt_tokens"`
			}
		}
		if code != 200 || json.Unmarshal([]byte(body), &v) != nil {
			t.Fatalf("%d %s", code, body)
		}
		if v.Object != "chat.completion" || v.Model != "tiny" || len(v.Choices) != 1 ||
			v.Choices[0].Message.Content != "echo: be brief hi" || v.Choices[0].Message.Role != "assistant" ||
			v.Choices[0].FinishReason != "stop" || v.Usage.CompletionTokens != 4 || v.Usage.PromptTokens != 3 {
			t.Fatalf("%+v", v)
		}
	})

	t.Run("ChatStream", func(t *testing.T) {
		code, body := post(t, u+"/v1/chat/completions",
			`{"messages":[{"role":"user","content":"hello world"}],"stream":true,"max_tokens":2,"stream_options":{"include_usage":true}}`)
		data := sseData(t, body)
		if code != 200 || len(data) < 3 || data[len(data)-1] != "[DONE]" {
			t.Fatalf("%d %q", code, data)
		}
		var text strings.Builder
		var finish string
		var usage bool
		for _, d := range data[:len(data)-1] {
			var c struct {
				Object  string
				Choices []struct {
					Delta        struct{ Role, Content string }
					FinishReason *string `json:"finish_reason"`
				}
				Usage *struct{} `json:"usage"`
			}
			if err := json.Unmarshal([]byte(d), &c); err != nil || c.Object != "chat.completion.chunk" {
				t.Fatalf("chunk %s: %v", d, err)
			}
			for _, ch := range c.Choices {
				text.WriteString(ch.Delta.Content)
				if ch.FinishReason != nil {
					finish = *ch.FinishReason
				}
			}
			usage = usage || c.Usage != nil
		}
		if text.String() != "echo: hello" || finish != "length" || !usage {
			t.Fatalf("text %q finish %q usage %v", text.String(), finish, usage)
		}
	})

	t.Run("Completions", func(t *testing.T) {
		code, body := post(t, u+"/v1/completions", `{"prompt":"a b","stream":true}`)
		data := sseData(t, body)
		if code != 200 || data[len(data)-1] != "[DONE]" {
			t.Fatalf("%d %q", code, data)
		}
		var text strings.Builder
		for _, d := range data[:len(data)-1] {
			var c struct {
				Object  string
				Choices []struct{ Text string }
			}
			if err := json.Unmarshal([]byte(d), &c); err != nil || c.Object != "text_completion" {
				t.Fatalf("chunk %s: %v", d, err)
			}
			text.WriteString(c.Choices[0].Text)
		}
		if text.String() != "echo: a b" {
			t.Fatalf("text %q", text.String())
		}
		code, body = post(t, u+"/v1/completions", `{"prompt":"a b"}`)
		if code != 200 || !strings.Contains(body, `"text":"echo: a b"`) {
			t.Fatalf("%d %s", code, body)
		}
	})

	t.Run("NativeStreamHasNoDone", func(t *testing.T) {
		_, body := post(t, u+"/completion", `{"prompt":"z","stream":true}`)
		data := sseData(t, body)
		if len(data) != 3 || !strings.Contains(data[2], `"stop":true`) {
			t.Fatalf("%q", data)
		}
	})

	t.Run("BadRequest", func(t *testing.T) {
		// llama-server answers malformed JSON with 500 server_error.
		code, body := post(t, u+"/completion", `{bad`)
		if code != 500 || !strings.Contains(body, "server_error") {
			t.Fatalf("%d %s", code, body)
		}
		code, body = post(t, u+"/completion", `{"n_predict":1}`)
		if code != 400 || !strings.Contains(body, "invalid_request_error") {
			t.Fatalf("%d %s", code, body)
		}
	})

	t.Run("ModelsEmbeddingsMetrics", func(t *testing.T) {
		resp, err := http.Get(u + "/v1/models")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), `"id":"tiny"`) {
			t.Fatalf("models: %s", b)
		}
		code, body := post(t, u+"/v1/embeddings", `{"input":["x","y"]}`)
		var e struct {
			Data []struct {
				Embedding []float64
				Index     int
			}
		}
		if code != 200 || json.Unmarshal([]byte(body), &e) != nil || len(e.Data) != 2 || len(e.Data[1].Embedding) != 16 {
			t.Fatalf("%d %s", code, body)
		}
		resp, err = http.Get(u + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), "llamacpp:tokens_predicted_total") {
			t.Fatalf("metrics: %s", b)
		}
	})
}

func TestTestEngine_NoEmbeddingsByDefault(t *testing.T) {
	t.Parallel()
	p := startReady(t, testConfig(t))
	code, body := post(t, p.URL()+"/v1/embeddings", `{"input":"x"}`)
	if code != 501 || !strings.Contains(body, "--embeddings") {
		t.Fatalf("%d %s", code, body)
	}
	resp, err := http.Get(p.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 501 {
		t.Fatalf("/metrics without --metrics: %d", resp.StatusCode)
	}
}

func TestTestEngine_Slots(t *testing.T) {
	t.Parallel()
	// One slot, 4 tokens of 50ms each: two requests take at least 400ms.
	p := startReady(t, testConfig(t, "--parallel", "1", "--test-token-delay", "50ms"))
	begin := time.Now()
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if _, err := complete(context.Background(), p, "a b c", nil); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if took := time.Since(begin); took < 400*time.Millisecond {
		t.Fatalf("two requests on one slot took %s: they ran concurrently", took)
	}
}
