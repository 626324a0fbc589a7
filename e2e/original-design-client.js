class KeyValueStoreClient {
    constructor(apiGatewayUrl) {
        this.apiGatewayUrl = apiGatewayUrl;
    }

    async get(key) {
        const response = await fetch(`${this.apiGatewayUrl}/get?key=${key}`);
        return response.json();
    }

    async put(key, value) {
        const response = await fetch(`${this.apiGatewayUrl}/put`, {
            method: 'POST',
            headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify({ key, value })
        });
        return response.json();
    }

    async delete(key) {
        const response = await fetch(`${this.apiGatewayUrl}/delete?key=${key}`, {
            method: 'DELETE'
        });
        return response.json();
    }
}
