package main

import (
	"slices"
	"testing"

	"github.com/vramcram/vramcram/config"
)

func TestDiffConfigs(t *testing.T) {
	base := func() *config.Config {
		c := config.Default()
		c.Models.LLM = []config.LLMModel{
			{Name: "a", ModelPath: "a.gguf", VRAMMB: 1000},
			{Name: "b", ModelPath: "b.gguf", VRAMMB: 1000},
		}
		c.Models.Diffusion = []config.DiffusionModel{{Name: "sd", ModelPath: "sd.safetensors"}}
		return &c
	}
	for _, tc := range []struct {
		name string
		edit func(c *config.Config)
		want configDiff
	}{
		{"Nothing", func(c *config.Config) {}, configDiff{}},
		{"ModelAddedAndRemoved", func(c *config.Config) {
			c.Models.LLM[1] = config.LLMModel{Name: "c", ModelPath: "c.gguf"}
		}, configDiff{Added: []string{"c"}, Removed: []string{"b"}}},
		{"EngineOptionChanged", func(c *config.Config) {
			c.Models.LLM[0].Config.ContextSize = 8192
		}, configDiff{Changed: []string{"a"}}},
		{"LiveModelKeysNeedNoRestart", func(c *config.Config) {
			c.Models.LLM[0].Pinned, c.Models.LLM[0].TTLSeconds, c.Models.LLM[0].Aliases = true, 60, []string{"x"}
		}, configDiff{}},
		{"SchedulingIsLive", func(c *config.Config) {
			c.Scheduling.Policy = "fifo"
			c.Server.APIKeys = []string{"k"}
		}, configDiff{Keys: []string{"server.api_keys", "scheduling.policy"}}},
		{"ListenAddressAndDataDirNeedARestart", func(c *config.Config) {
			c.Server.Port = 9999
			c.Storage.DataDir = "/elsewhere"
			c.Scheduling.MaxQueue = 5
		}, configDiff{Keys: []string{"server.port", "storage.data_dir", "scheduling.max_queue"},
			Restart: []string{"server.port", "storage.data_dir", "scheduling.max_queue"}}},
		{"EngineBinaryRestartsEveryModel", func(c *config.Config) {
			c.Inference.LlamaServerPath = "/opt/llama-server"
		}, configDiff{Changed: []string{"a", "b", "sd"}, Keys: []string{"inference.llama_server_path"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old, cur := base(), base()
			tc.edit(cur)
			got := diffConfigs(old, cur)
			for _, p := range []struct {
				what      string
				got, want []string
			}{{"added", got.Added, tc.want.Added}, {"removed", got.Removed, tc.want.Removed}, {"changed", got.Changed, tc.want.Changed},
				{"keys", got.Keys, tc.want.Keys}, {"restart", got.Restart, tc.want.Restart}} {
				if !slices.Equal(p.got, p.want) {
					t.Errorf("%s = %v, want %v", p.what, p.got, p.want)
				}
			}
		})
	}
}
