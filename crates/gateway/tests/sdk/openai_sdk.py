"""The official `openai` Python package against the gateway, as users run it.

Reads OPENAI_BASE_URL and OPENAI_API_KEY; prints what each call gave as one
JSON object, which the Rust test checks.
"""
import json

from openai import OpenAI

client = OpenAI(max_retries=0)
out = {}
messages = [{"role": "user", "content": "Say hello."}]

chat = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
out["chat"] = chat.choices[0].message.content

stream = client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)
out["chat_stream"] = "".join(
    c.choices[0].delta.content or "" for c in stream if c.choices
)

response = client.responses.create(model="gpt-4o-mini", input="Say hello.", max_output_tokens=6)
out["response"] = response.output_text
out["response_id"] = response.id
out["response_output_tokens"] = response.usage.output_tokens

# Follow-ups reach the key that made the response (another key's upstream
# account would not find it).
out["follow_ups"] = [
    client.responses.create(
        model="gpt-4o-mini", input="And then?", previous_response_id=response.id
    ).output_text
    for _ in range(3)
]

kinds, text = [], ""
for event in client.responses.create(model="gpt-4o-mini", input="Say hello.", stream=True):
    kinds.append(event.type)
    if event.type == "response.output_text.delta":
        text += event.delta
    if event.type == "response.completed":
        out["response_stream_usage"] = event.response.usage.total_tokens
out["response_stream"] = text
out["response_stream_events"] = kinds

embedding = client.embeddings.create(model="text-embedding-3-small", input="hello")
out["embedding"] = len(embedding.data[0].embedding)

completion = client.completions.create(model="gpt-4o-mini", prompt="Say hello.", max_tokens=5)
out["completion"] = completion.choices[0].text

uploaded = client.files.create(file=("notes.txt", b"the notes"), purpose="assistants")
out["file_id"] = uploaded.id
out["file_content"] = client.files.content(uploaded.id).text

print(json.dumps(out))
