package engine

import "testing"

func TestFindUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		want Usage
		ok   bool
	}{
		{"OpenAIWithTimings", `{"choices":[{"message":{"content":"hi"}}],"timings":{"cache_n":0,"prompt_n":5,"predicted_n":3,"predicted_per_second":41.5},"usage":{"completion_tokens":3,"prompt_tokens":7,"total_tokens":10}}`,
			Usage{PromptTokens: 7, CompletionTokens: 3, TokensPerSecond: 41.5}, true},
		{"UsageOnly", `{"usage":{"prompt_tokens":4,"total_tokens":4}}`, Usage{PromptTokens: 4}, true},
		{"AnthropicShape", `{"content":[],"usage":{"input_tokens":9,"output_tokens":2}}`, Usage{PromptTokens: 9, CompletionTokens: 2}, true},
		{"TimingsOnlyStreamTail", "data: {\"choices\":[{\"delta\":{\"content\":\" x\"}}]}\n\n" +
			"data: {\"choices\":[{\"finish_reason\":\"stop\",\"delta\":{}}],\"timings\":{\"cache_n\":2,\"prompt_n\":3,\"predicted_n\":6,\"predicted_per_second\":12}}\n\ndata: [DONE]\n\n",
			Usage{PromptTokens: 5, CompletionTokens: 6, TokensPerSecond: 12}, true},
		{"LastWins", `data: {"usage":{"prompt_tokens":1,"completion_tokens":1}}` + "\n\n" + `data: {"usage":{"prompt_tokens":2,"completion_tokens":8}}`,
			Usage{PromptTokens: 2, CompletionTokens: 8}, true},
		{"KeyInsideText", `{"text":"say \"usage\": {\"prompt_tokens\": 99}","usage":{"prompt_tokens":1,"completion_tokens":2}}`,
			Usage{PromptTokens: 1, CompletionTokens: 2}, true},
		{"OnlyInsideText", `{"text":"\"usage\": {\"prompt_tokens\": 99}"}`, Usage{}, false},
		{"CutOff", `..."usage":{"prompt_tok`, Usage{}, false},
		{"Nothing", `{"type":"diffusion","images":[]}`, Usage{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := FindUsage([]byte(tc.body))
			if got != tc.want || ok != tc.ok {
				t.Fatalf("FindUsage = %+v, %v; want %+v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func FuzzFindUsage(f *testing.F) {
	f.Add([]byte(`{"usage":{"prompt_tokens":1},"timings":{"predicted_n":2}}`))
	f.Add([]byte(`"usage": "timings":{`))
	f.Fuzz(func(t *testing.T, b []byte) {
		u, _ := FindUsage(b)
		if u.PromptTokens < 0 || u.CompletionTokens < 0 || u.TokensPerSecond < 0 {
			t.Fatalf("negative figures %+v", u)
		}
	})
}
